"""What a rules thread or process is busy with now: close() names it when it has to abandon it."""
from __future__ import annotations

import time


class Activity:
    """The one thing being done now ("rule 'x' at step 3"), and since when (time.monotonic())."""

    __slots__ = ("since", "what")

    def __init__(self) -> None:
        self.what: str | None = None
        self.since = 0.0

    def start(self, what: str) -> None:
        self.since, self.what = time.monotonic(), what

    def stop(self) -> None:
        self.what = None

    def describe(self) -> str | None:
        """"rule 'x' at step 3 (running for 9.8 s)", or None when idle."""
        what, since = self.what, self.since
        return None if what is None else f"{what} (running for {time.monotonic() - since:.1f} s)"
