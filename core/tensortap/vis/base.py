"""Visualizer: turns a trial (numpy) into a picture or page. Framework-free by construction."""
from __future__ import annotations

import inspect
import os
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ..errors import ConfigError, did_you_mean


class Visualizer:
    """Base class of visualizers, built-in or plugin.

    Subclasses set a unique `name` and `suffix` (".png", ".gif", ".html"), implement
    `render(trial, out, **options)` writing `out` and returning its path, and `applies_to(trial)`
    so the report knows when to include them. Options are keyword arguments of `render` with
    defaults; `tensortap vis NAME RUN --opt k=v` converts strings to the default's type.
    """

    name: str = "visualizer"
    suffix: str = ".png"
    #: other output extensions `render` accepts (e.g. (".gif",)); the extension of `out` picks one
    suffixes: tuple = ()

    def applies_to(self, trial) -> bool:
        return False

    if TYPE_CHECKING:  # each visualizer's options are keywords of its own render (see options())
        render: Callable[..., str]
    else:
        def render(self, trial, out: str, **options: Any) -> str:
            raise TypeError(f"visualizer {type(self).__name__} defines no render(trial, out, **options); "
                            "a Visualizer subclass must define it")

    def table(self, trial) -> Optional[Tuple[List[str], List[tuple]]]:
        """(header, rows) of the numbers behind the picture, shown under it in the report; None: none."""
        return None

    @classmethod
    def options(cls) -> Dict[str, Any]:
        sig = inspect.signature(cls.render)
        return {p.name: (None if p.default is inspect.Parameter.empty else p.default)
                for p in list(sig.parameters.values())[3:]
                if p.kind is p.KEYWORD_ONLY or p.default is not inspect.Parameter.empty}

    @classmethod
    def inline_scripts(cls) -> List[str]:
        """The text of each inline <script> an HTML output of this visualizer runs (its own code,
        never data). The report's Content-Security-Policy allows exactly these, by hash: any other
        script in an embedded page (one injected through a run's data) does not run."""
        return []

    @classmethod
    def describe(cls) -> str:
        return (inspect.getdoc(cls) or "").split("\n\n")[0]

    @classmethod
    def check_options(cls, options: Dict[str, Any]) -> None:
        """ConfigError naming an unknown option and the known ones."""
        known = cls.options()
        takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.render).parameters.values())
        for k in options:
            if k not in known and not takes_any:
                raise ConfigError(f"visualizer {cls.name!r} has no option {k!r}." + did_you_mean(k, known)
                                  + f" Its options: {', '.join(sorted(known)) or 'none'}")

    def show(self, trial, suffix: str = "", **options: Any):
        """Render into a temporary file and return something Jupyter displays
        (IPython.display.Image/HTML when IPython is installed, else the Rendered path)."""
        from ._common import Rendered

        fd, out = tempfile.mkstemp(suffix=suffix or self.suffix, prefix=f"tensortap-{self.name}-")
        os.close(fd)
        path = Rendered(self.render(trial, out, **options))
        try:
            from IPython import display
        except ImportError:
            return path
        if path.suffix in (".png", ".gif"):
            with open(path, "rb") as f:
                return display.Image(data=f.read(), format=path.suffix[1:])
        return display.HTML(path._repr_html_())
