"""Reductions computed off the training thread.

On a saved step the training thread only snapshots each tensor (`convert.snapshot`: an on-device
copy when the tensor's memory could change, e.g. a parameter the optimizer updates in place) and
gets a handle back. Snapshots of one phase of the step (all parameters at the step start, all
gradients of one backward pass) form one job; a single daemon thread computes a job's reductions
with torch ops (which release the GIL) and one host transfer per device. The Hook resolves the
handles before the step goes to the writer (`Handle.result`), by then usually long done.
"""
from __future__ import annotations

import queue
import threading
from typing import List, Optional, Tuple

import numpy as np
import torch

from .convert import _PLAIN_FLOATS, as_is, reduce_work, snapshot


#: recycled snapshot buffers kept per (numel, dtype, device): steps in flight: the one being reduced, the one
#: being snapshotted
POOL_PER_KEY = 4
#: and at most this many bytes in all (beyond it, snapshots are fresh allocations)
POOL_BYTES = 256 * 1024 * 1024


class Job:
    """Snapshots sharing one reduction configuration, reduced together."""

    __slots__ = ("names", "bins", "items", "buffers", "ready", "done_event", "values", "error", "submitted")

    def __init__(self, names: Tuple[str, ...], bins: int) -> None:
        self.names, self.bins = names, bins
        self.items: list = []
        self.buffers: list = []  # pooled snapshot memory, handed back once reduced
        self.ready: list = []  # CUDA events recorded after the snapshot copies, on the training thread's streams
        self.done_event = threading.Event()
        self.values: Optional[List[np.ndarray]] = None
        self.error: Optional[BaseException] = None
        self.submitted = False

    def run(self, recycle=None) -> None:
        try:
            for dev, ev in self.ready:  # the copies were queued on the training thread's stream: order after them
                torch.cuda.current_stream(dev).wait_event(ev)
            self.values = reduce_work(self.items, self.names, self.bins)
        except BaseException as e:  # noqa: BLE001 - handed to whoever asks for the result
            self.error = e
        finally:
            self.items = []  # the snapshots are not needed any more
            if recycle is not None and self.buffers:
                recycle(self.buffers)
            self.buffers = []
            self.done_event.set()


class Handle:
    """One tensor's packed reductions, once its job has run (what Adapter.reduce_many may return)."""

    __slots__ = ("job", "index", "reducer")

    def __init__(self, reducer: "Reducer", job: Job, index: int) -> None:
        self.reducer, self.job, self.index = reducer, job, index

    def done(self) -> bool:
        return self.job.done_event.is_set()

    def result(self) -> np.ndarray:
        job = self.job
        if not job.done_event.is_set():
            self.reducer.submit(job)
            job.done_event.wait()
        if job.error is not None:
            raise job.error
        return job.values[self.index]


class Reducer:
    """Collects snapshots into open jobs (one per reduction configuration) and runs submitted
    jobs on one daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict = {}
        self._q: "queue.SimpleQueue[Optional[Job]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._pool: dict = {}  # (numel, dtype, device) -> free flat snapshot buffers
        self._pool_bytes = 0

    def add(self, tensors, names: Tuple[str, ...], bins: int) -> List[Handle]:
        """Snapshot `tensors` now (training thread) and return their handles."""
        taken: list = []

        def buffer(n: int, dtype, device):
            b = None
            with self._lock:
                free = self._pool.get((n, dtype, device))
                if free:
                    b = free.pop()
                    self._pool_bytes -= b.nbytes
            if b is None:
                b = torch.empty(n, dtype=dtype, device=device)
            taken.append(b)
            return b

        snaps = self._snapshot_many(tensors, buffer) if len(tensors) > 2 else [snapshot(t, buffer) for t in tensors]
        ready = []
        for dev in {f.device for f, _, _ in snaps if f.is_cuda}:
            with torch.cuda.device(dev):
                ev = torch.cuda.Event()
                ev.record()
            ready.append((dev, ev))
        with self._lock:
            job = self._open.get((names, bins))
            if job is None:
                job = self._open[(names, bins)] = Job(names, bins)
            start = len(job.items)
            job.items.extend(snaps)
            job.buffers.extend(taken)
            job.ready.extend(ready)
        return [Handle(self, job, start + i) for i in range(len(snaps))]

    @staticmethod
    def _snapshot_many(tensors, buffer) -> list:
        """Snapshots of many tensors (all parameters at a step start): float32/float64 ones of one
        device copied with ONE torch.cat into one buffer, each item a view of it."""
        snaps: list = [None] * len(tensors)
        groups: dict = {}
        for i, t in enumerate(tensors):
            if as_is(t):
                groups.setdefault((t.dtype, t.device), []).append(i)
            else:
                snaps[i] = snapshot(t, buffer)
        for (dtype, _dev), idx in groups.items():
            flats = [tensors[i].detach().reshape(-1) for i in idx]
            sizes = [f.numel() for f in flats]
            buf = buffer(sum(sizes), dtype, flats[0].device)
            torch.cat(flats, out=buf)
            edge = _PLAIN_FLOATS[dtype]
            for i, v in zip(idx, buf.split(sizes)):
                snaps[i] = (v, True, edge)
        return snaps

    def _recycle(self, buffers) -> None:
        with self._lock:
            self._recycle_locked(buffers)

    def _recycle_locked(self, buffers) -> None:
        for b in buffers:
            free = self._pool.setdefault((b.numel(), b.dtype, b.device), [])
            if len(free) < POOL_PER_KEY and self._pool_bytes + b.nbytes <= POOL_BYTES:
                free.append(b)
                self._pool_bytes += b.nbytes

    @property
    def has_open(self) -> bool:
        return bool(self._open)

    def submit_open(self) -> None:
        """Start computing every open job (the end of a capture phase)."""
        with self._lock:
            jobs, self._open = list(self._open.values()), {}
        for job in jobs:
            self.submit(job)

    def submit(self, job: Job) -> None:
        with self._lock:
            if job.submitted:
                return
            job.submitted = True
            if self._open.get((job.names, job.bins)) is job:
                del self._open[(job.names, job.bins)]
            run_here = self._closed
            if not run_here and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tensortap-torch-reduce", daemon=True)
                self._thread.start()
        if run_here:
            job.run()
        else:
            self._q.put(job)

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            job.run(self._recycle)

    def close(self) -> None:
        """Finish what was submitted and stop the thread; later jobs run on the caller's thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._q.put(None)
            thread.join()
