"""A progress bar for long work (t-SNE, export, report): on a terminal, and in a notebook.

On a terminal it is a one-line bar on stderr. In a Jupyter notebook it is a tqdm.auto widget when
tqdm is installed, else the same one-line bar (notebooks redraw a line on "\r"). In a log file, a
pipe or CI output it prints nothing: progress output there is noise. `TENSORTAP_PROGRESS=1` forces
it on (stderr), `=0` forces it off.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")


def _in_notebook() -> bool:
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and type(shell).__name__ != "TerminalInteractiveShell"


def enabled(stream: Optional[TextIO] = None) -> bool:
    """Whether a bar would draw on `stream` (default stderr): a TTY or a notebook, not disabled."""
    env = os.environ.get("TENSORTAP_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if _in_notebook():
        return stream in (sys.stderr, sys.stdout)
    return tty and os.environ.get("TERM", "") != "dumb"


def _notebook_bar(total: Optional[int], desc: str):
    """A tqdm.auto bar (a widget in Jupyter), or None when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    try:
        return tqdm(total=total, desc=desc, leave=True)
    except Exception:  # noqa: BLE001 - a broken widget setup: the text bar instead
        return None


class Progress:
    """`with Progress(total, "t-SNE") as p: ... p.update()`: a one-line bar, redrawn at most 10x/s."""

    def __init__(self, total: Optional[int], desc: str = "", stream: Optional[TextIO] = None,
                 width: int = 28, force: Optional[bool] = None) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.active = enabled(self.stream) if force is None else bool(force)
        self._t0 = time.monotonic()
        self._last = 0.0
        self._drawn = False
        self._widget = _notebook_bar(total, desc) if self.active and _in_notebook() else None

    def update(self, n: int = 1, note: str = "") -> None:
        """Advance by `n`; redraws when enough time passed (or at the end)."""
        self.n += n
        if not self.active:
            return
        if self._widget is not None:
            self._widget.update(n)
            if note:
                self._widget.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if now - self._last < 0.1 and not (self.total and self.n >= self.total):
            return
        self._last = now
        self._draw(note)

    def _draw(self, note: str = "") -> None:
        el = time.monotonic() - self._t0
        if self.total:
            frac = min(1.0, self.n / self.total)
            fill = int(frac * self.width)
            bar = "#" * fill + "-" * (self.width - fill)
            line = f"\r{self.desc} [{bar}] {self.n}/{self.total} {el:5.1f}s {note}"
        else:
            line = f"\r{self.desc} {self.n} {el:5.1f}s {note}"
        try:
            self.stream.write(line[:200].ljust(min(200, len(line) + 2)))
            self.stream.flush()
            self._drawn = True
        except (OSError, ValueError):
            self.active = False

    def close(self) -> None:
        """Finish the line (only if something was drawn)."""
        if self._widget is not None:
            self._widget.close()
            self._widget = None
        if self.active and self._drawn:
            try:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self.active = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable[T], desc: str = "", total: Optional[int] = None,
             stream: Optional[TextIO] = None) -> Iterator[T]:
    """Iterate `items` with a bar on a terminal (silent elsewhere)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, stream) as p:
        for x in items:
            yield x
            p.update()
