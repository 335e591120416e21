"""A progress bar for long work (t-SNE, export, report) that draws only on a terminal.

In a log file, a pipe, CI output or a notebook it prints nothing: progress output there is
noise. `TENSORTAP_PROGRESS=1` forces it on (stderr), `=0` forces it off.
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
    """Whether a bar would draw on `stream` (default stderr): a TTY, not a notebook, not disabled."""
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
    return tty and not _in_notebook() and os.environ.get("TERM", "") != "dumb"


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

    def update(self, n: int = 1, note: str = "") -> None:
        """Advance by `n`; redraws when enough time passed (or at the end)."""
        self.n += n
        if not self.active:
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
