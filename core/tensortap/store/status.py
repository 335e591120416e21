"""Is anyone still writing this run? `trial.writer_status()`: per worker and for the run."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..errors import CorruptRunError
from . import liveness
from .reader import WorkerReader

#: the states a writer can be in
COMPLETE, ALIVE, DEAD, UNKNOWN = "complete", liveness.ALIVE, liveness.DEAD, liveness.UNKNOWN


@dataclass(frozen=True)
class WorkerStatus:
    """One worker's writer, as its files show it.

    state: "complete" (closed cleanly), "alive" (its process runs on this machine, or its heartbeat
    is fresh), "dead" (gone without closing the run: no more steps will come) or "unknown" (a run
    from before store format 3 written on another machine: no heartbeat to judge by)."""

    worker: str
    state: str
    pid: Optional[int]
    host: Optional[str]
    started: Optional[float]
    heartbeat: Optional[float]
    last_step: Optional[int]
    complete: bool
    detail: str


@dataclass(frozen=True)
class WriterStatus:
    """The run's writers: "complete" when every worker closed its run; else "alive" if any writer
    is, else "unknown" if any cannot be judged, else "dead" (every unfinished writer is gone).
    `last_step`: the newest step any worker wrote."""

    state: str
    last_step: Optional[int]
    workers: Tuple[WorkerStatus, ...]
    detail: str

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE


def worker_status(reader: WorkerReader, dead_after: float = liveness.DEAD_AFTER_SECONDS) -> WorkerStatus:
    """Judge one worker's writer from its claim file (format 3) or, for older runs, its meta.json."""
    last = max(reader.steps) if reader.steps else None
    try:
        holder = liveness.read_holder(reader.fs, reader.local, reader.root_real, reader.dir)
    except CorruptRunError as e:  # a hostile claim file (a FIFO, a link out of the run): not opened
        holder = None
        if not reader.ended:
            return _status(reader, UNKNOWN, None, last, f"its claim file is refused: {e}")
    if holder is None:
        holder = _holder_from_meta(reader.meta)
    if reader.ended:
        return _status(reader, COMPLETE, holder, last, "closed cleanly")
    if holder is None:
        return _status(reader, UNKNOWN, None, last, "no writer has claimed it yet, or its claim is unreadable")
    state, why = liveness.judge(holder, dead_after)
    if state == liveness.CLOSED:  # the claim says closed, the index has no end record
        reader.refresh()
        if reader.ended:
            return _status(reader, COMPLETE, holder, last, "closed cleanly")
        return _status(reader, DEAD, holder, last, f"its writer {why} without writing the end of the run")
    return _status(reader, state, holder, last, why)


def _holder_from_meta(meta: Dict[str, Any]) -> Optional[liveness.Holder]:
    """What meta.json tells of a writer from before store format 3 (pid, host, creation time)."""
    pid, host, created = meta.get("pid"), meta.get("hostname"), meta.get("created")
    if not (isinstance(pid, int) and isinstance(host, str) and isinstance(created, (int, float))):
        return None
    return liveness.Holder(token="", pid=pid, host=host, started=float(created))


def _status(reader: WorkerReader, state: str, h: Optional[liveness.Holder], last: Optional[int], detail: str
            ) -> WorkerStatus:
    return WorkerStatus(worker=reader.worker, state=state, pid=h.pid if h else None, host=h.host if h else None,
                        started=h.started if h else None, heartbeat=h.heartbeat if h else None, last_step=last,
                        complete=reader.ended, detail=detail)


def run_status(workers: Tuple[WorkerStatus, ...]) -> WriterStatus:
    """The run's state from its workers' (see WriterStatus)."""
    last = max((w.last_step for w in workers if w.last_step is not None), default=None)
    if not workers:
        return WriterStatus(UNKNOWN, None, (), "no worker has started writing")
    states = {w.state for w in workers}
    if states == {COMPLETE}:
        return WriterStatus(COMPLETE, last, workers, "every worker closed its run")
    for state in (ALIVE, UNKNOWN, DEAD):
        if state in states:
            detail = "; ".join(f"{w.worker}: {w.detail}" for w in workers if w.state == state)
            return WriterStatus(state, last, workers, detail)
    raise AssertionError(states)  # pragma: no cover - every state is handled above
