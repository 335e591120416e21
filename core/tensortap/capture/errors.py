"""Failures inside tensortap, reported without stopping training: logged once per kind, counted,
kept in a bounded list (`hook.errors`) and recorded in the run (the first few of each kind)."""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Dict, List, Tuple

log = logging.getLogger("tensortap")

#: an index record for the run, written only when the run's writer exists
RecordSink = Callable[[Dict[str, Any]], None]


class ErrorReporter:
    """One per Hook. A disk full for a week must not grow memory nor flood the log: a kind of
    failure (its message up to the first quoted name, digits folded, and the exception type) is
    logged the first time, recorded in the run the first `recorded_per_kind` times, and every
    message is kept in `errors` up to `max_kept`."""

    max_kept = 1000
    recorded_per_kind = 3

    def __init__(self, record: RecordSink) -> None:
        self.errors: List[str] = []
        self._record = record
        self._counts: Dict[Tuple[str, str], int] = {}

    def report(self, what: str, exc: BaseException) -> None:
        """`what` failed with `exc`; training goes on."""
        key = (re.sub(r"\d+", "#", what.split("'")[0]), type(exc).__name__)
        n = self._counts.get(key, 0)
        self._counts[key] = n + 1
        msg = f"{what}: {type(exc).__name__}: {exc}"
        if len(self.errors) < self.max_kept:
            self.errors.append(msg)
        if n == 0:
            log.warning("tensortap: %s (training continues; further errors like this are counted, not logged)", msg)
        if n < self.recorded_per_kind:
            self._record({"type": "event", "event": "error", "what": what, "error": str(exc), "time": time.time()})

    def event(self, event: str, detail: str) -> None:
        """Record a named event of the run (a stop request, what the live rules need)."""
        self._record({"type": "event", "event": event, "detail": detail, "time": time.time()})
