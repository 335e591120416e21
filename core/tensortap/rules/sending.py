"""A small bounded pool of daemon threads for actions that wait on the network (webhooks): jobs
run concurrently, off the thread that evaluates rules and records their results, and close()
waits for them only until a deadline. Daemon threads: a job stuck on a socket never keeps the
interpreter from exiting."""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable

Job = Callable[[], None]


class SendPool:
    """Runs jobs on up to `workers` daemon threads (started as needed); at most `max_pending` wait
    (more are refused). Closed once: make a new pool to send again."""

    def __init__(self, name: str, workers: int = 4, max_pending: int = 256) -> None:
        self.name = name
        self.workers = max(1, int(workers))
        self.max_pending = max(1, int(max_pending))
        self._cv = threading.Condition()
        self._q: collections.deque[tuple[str, Job]] = collections.deque()
        self._running: list[str] = []  # labels of the jobs on a thread now
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, label: str, job: Job) -> bool:
        """Queue `job` (described by `label`); False if the queue is full or the pool closed."""
        with self._cv:
            if self._closed or len(self._q) >= self.max_pending:
                return False
            self._q.append((label, job))
            if len(self._q) > self._idle and len(self._threads) < self.workers:
                t = threading.Thread(target=self._run, name=f"tensortap-{self.name}", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._cv.notify()
        return True

    def close(self, deadline: float | None) -> list[str]:
        """Wait until every queued job ran, or until `deadline` (time.monotonic(); None: no
        limit). Jobs not finished then are abandoned (the queued ones never start); returns their
        labels, running ones first."""
        with self._cv:
            while self._q or self._running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cv.wait(0.5 if left is None else min(left, 0.5))
            left_over = list(self._running) + [label for label, _ in self._q]
            self._q.clear()
            self._closed = True
            self._cv.notify_all()
        return left_over

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._closed:
                    self._idle += 1
                    try:
                        self._cv.wait()
                    finally:
                        self._idle -= 1
                if not self._q:
                    return
                label, job = self._q.popleft()
                self._running.append(label)
            try:
                job()  # reports its own failures
            finally:
                with self._cv:
                    self._running.remove(label)
                    self._cv.notify_all()
