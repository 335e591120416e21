"""Visualizer: turns a trial (numpy) into a picture or page. Framework-free by construction."""
from __future__ import annotations

import inspect
from typing import Any, Dict


class Visualizer:
    """Base class of visualizers, built-in or plugin.

    Subclasses set a unique `name` and `suffix` (".png", ".gif", ".html"), implement
    `render(trial, out, **options)` writing `out` and returning its path, and `applies_to(trial)`
    so the report knows when to include them.
    """

    name: str = "visualizer"
    suffix: str = ".png"

    def applies_to(self, trial) -> bool:
        return False

    def render(self, trial, out: str, **options: Any) -> str:
        raise NotImplementedError

    @classmethod
    def options(cls) -> Dict[str, Any]:
        sig = inspect.signature(cls.render)
        return {p.name: (None if p.default is inspect.Parameter.empty else p.default)
                for p in list(sig.parameters.values())[3:] if p.kind is p.KEYWORD_ONLY or p.default is not inspect.Parameter.empty}

    @classmethod
    def describe(cls) -> str:
        return (inspect.getdoc(cls) or "").split("\n\n")[0]
