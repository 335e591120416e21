"""How a Hook closes within its time limit. First every captured step is written, however long
the disk takes (the data is what the run is for; this is not part of the limit). Then the live
rules and their actions (callbacks, webhooks) get `close_timeout` seconds together to evaluate
the steps still pending and finish; what they have not finished then is abandoned and named (a
warning, hook.abandoned, and a `close_abandoned` event in the run). Last, the rule results,
that event and the end-of-run record are written and the files closed."""
from __future__ import annotations

import logging
import time
from typing import List, Optional

log = logging.getLogger("tensortap")

#: Hook(close_timeout=...) default: seconds close() waits for live rules, callbacks and webhooks
DEFAULT_CLOSE_TIMEOUT = 10.0
#: while close() waits for a slow disk, it says so this often (seconds)
SLOW_DISK_NOTICE = 30.0


def check_close_timeout(value) -> Optional[float]:
    """A close_timeout as a float (None: wait for the rules however long they take), or ConfigError."""
    from .errors import ConfigError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"close_timeout must be a number of seconds >= 0 (or None: no limit), got {value!r}")
    return float(value)


def record_abandoned(hook, abandoned: List[str], limit: Optional[float]) -> None:
    """Say what close() gave up on: a warning, and an event in the run (trial.events())."""
    if not abandoned:
        return
    bound = f"close_timeout={limit:g} s" if limit is not None else "close_timeout=None"
    detail = (f"close() gave up waiting ({bound}) for: " + " | ".join(abandoned)
              + ". Every captured step was written; tt.Hook(..., close_timeout=...) sets how long close() waits")
    log.warning("tensortap: %s (run %s)", detail, hook.out_dir)
    if hook.writer is not None:
        hook.writer.submit_record({"type": "event", "event": "close_abandoned", "abandoned": list(abandoned),
                                   "detail": detail, "time": time.time()})


def wait_written(writer, out_dir, readable: bool = True) -> None:
    """Wait until everything queued is written, as long as that takes; on a slow disk say every
    SLOW_DISK_NOTICE s that close() is still writing (and how far it got). `readable`: also make
    it readable now on object stores (closes the open segment there; see StoreWriter.flush)."""
    t0 = time.monotonic()
    while not writer.flush(SLOW_DISK_NOTICE, roll=readable):
        log.warning("tensortap: close() is still writing the captured data to %s after %.0f s (%d steps written "
                    "so far; the disk is slow); it returns once every step is written",
                    out_dir, time.monotonic() - t0, writer.stats.steps_written)
