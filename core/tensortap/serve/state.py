"""The state of a run as `tensortap serve` shows it: live, complete, interrupted or writer gone.

Everything that decides it lives in `run_state`, so that it can switch to the store's own
writer-liveness API in one place.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Optional

#: a run on another host (whose process cannot be checked from here) that wrote nothing for
#: this long is shown as interrupted
STALE_AFTER = 300.0

LIVE, COMPLETE, INTERRUPTED, GONE = "live", "complete", "interrupted", "writer gone"


@dataclass(frozen=True)
class RunState:
    """What the page shows next to a run: the state and one sentence saying why."""

    state: str
    detail: str
    last_write: Optional[float]


def span(seconds: float) -> str:
    """A duration as people say it: "40 s", "12 min", "3.5 h", "4 days"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _process_started_after(pid: int, when: float) -> Optional[bool]:
    """Did process `pid` start after `when` (its pid reused by another program)? None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
        started = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return started > when + 2.0


def _alive(pid: int, created: Optional[float]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    except OSError:
        return True
    if isinstance(created, (int, float)) and _process_started_after(pid, float(created)):
        return False
    return True


def run_state(trial, now: Optional[float] = None, stale_after: float = STALE_AFTER) -> RunState:
    """The state of `trial`'s run: "complete" (every worker closed it), "writer gone" (its writer
    process on this host no longer exists and the run was not closed), "interrupted" (written from
    elsewhere, nothing new for `stale_after` seconds, not closed) or "live"."""
    now = time.time() if now is None else now
    last = trial.last_step()
    last_write = trial.step_time(last) if last is not None else None
    meta = trial.metadata
    created = meta.get("created")
    seen = last_write if last_write is not None else (created if isinstance(created, (int, float)) else None)
    wrote = (f"last step {last} written {span(now - last_write)} ago" if last_write is not None
             else "no step written yet")
    if trial.is_complete():
        return RunState(COMPLETE, f"closed cleanly; {wrote}", last_write)
    pid, host = meta.get("pid"), meta.get("hostname")
    if isinstance(pid, int) and not isinstance(pid, bool) and host == socket.gethostname():
        if not _alive(pid, created):
            return RunState(GONE, f"its writer (pid {pid} on this host) has exited without closing the run; {wrote}",
                            last_write)
        return RunState(LIVE, f"writer pid {pid} is running; {wrote}", last_write)
    if seen is not None and now - seen > stale_after:
        where = f"host {host}" if host else "an unknown host"
        return RunState(INTERRUPTED, f"written from {where} (its process cannot be checked from here), nothing new "
                                     f"for {span(now - seen)}; not closed; {wrote}", last_write)
    return RunState(LIVE, f"not closed yet; {wrote}", last_write)
