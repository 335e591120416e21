"""The state of a run as `tensortap serve` shows it: live, complete, interrupted or writer gone,
from the store's judgement of its writers (Trial.writer_status)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

#: a run whose writer cannot be judged from here (another host, no heartbeat) that wrote nothing
#: for this long is shown as interrupted
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


def run_state(trial, now: Optional[float] = None, stale_after: float = STALE_AFTER) -> RunState:
    """The state of `trial`'s run, from the store's own judgement of its writers
    (`trial.writer_status()`): "complete" (every worker closed it), "live" (a writer is alive: its
    process runs on this host, or its heartbeat is fresh), "writer gone" (it stopped without
    closing the run: its process is gone, or its heartbeat is stale) or, for a run whose writer
    cannot be judged from here (written elsewhere by a tensortap without heartbeats), "interrupted"
    once nothing new came for `stale_after` seconds, else "live"."""
    now = time.time() if now is None else now
    last = trial.last_step()
    last_write = trial.step_time(last) if last is not None else None
    created = trial.metadata.get("created")
    seen = last_write if last_write is not None else (created if isinstance(created, (int, float)) else None)
    wrote = (f"last step {last} written {span(now - last_write)} ago" if last_write is not None
             else "no step written yet")
    status = trial.writer_status()
    if status.state == "complete":
        return RunState(COMPLETE, f"closed cleanly; {wrote}", last_write)
    if status.state == "alive":
        return RunState(LIVE, f"{status.detail}; {wrote}", last_write)
    if status.state == "dead":
        return RunState(GONE, f"its writer stopped without closing the run ({status.detail}); {wrote}", last_write)
    if seen is not None and now - seen > stale_after:
        return RunState(INTERRUPTED, f"{status.detail}; nothing new for {span(now - seen)}; not closed; {wrote}",
                        last_write)
    return RunState(LIVE, f"not closed yet ({status.detail}); {wrote}", last_write)
