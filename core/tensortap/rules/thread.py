"""Live rules on a thread of the training process: what a rule that cannot go to the rules process
uses (or every rule with TENSORTAP_LIVE_RULES=thread). It shares the training process's GIL."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any

from .actions import Action
from .activity import Activity
from .base import Rule
from .evaluator import Evaluator
from .recording import Attached, apply_results
from .results import RuleResult


class ThreadRules:
    """Rules evaluated on a thread of the training process, each saved step once it is on disk;
    their results are recorded and their actions run on the same thread."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.rules: list[Attached] = []
        self._eval: Evaluator[int] = Evaluator(out_dir=hook.out_dir, report=hook._report)
        self._q: queue.Queue[int | None] = queue.Queue()
        self._acting = Activity()  # the action running now
        self._abandoned = False  # close() gave up on this thread: it records and acts no more
        self._thread = threading.Thread(target=self._run, name="tensortap-rules", daemon=True)
        self._thread.start()

    def add(self, rule: Rule, actions: list[Action]) -> None:
        self._eval.rules[len(self.rules)] = rule
        self.rules.append((rule, actions))

    def step_saved(self, step: int) -> None:
        self._q.put(step)

    def begin_close(self) -> None:
        """No more steps: evaluate those queued, then end."""
        self._q.put(None)

    def finish(self, deadline: float | None) -> list[str]:
        """Wait for the thread until `deadline` (time.monotonic(); None: no limit). A thread still
        busy then is abandoned (a daemon: it cannot be killed, but records and acts no more);
        returns what it was doing, by name."""
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return []
        self._abandoned = True
        doing = self._eval.activity.describe() or self._acting.describe() or "reading the run"
        left = self._q.qsize() - 1  # the None that ends it is queued too
        more = f"; {left} more saved step(s) not evaluated" if left > 0 else ""
        return [f"rules thread: {doing}{more}"]

    def close(self, timeout: float | None = None) -> list[str]:
        self.begin_close()
        return self.finish(None if timeout is None else time.monotonic() + timeout)

    def _open(self) -> bool:
        try:
            self.hook.writer.flush()
        except Exception as e:  # noqa: BLE001
            self.hook._report("live rules could not read the run", e)
            return False
        return self._eval.open()

    def _run(self) -> None:
        while True:
            try:
                step = self._q.get(timeout=self._eval.idle_timeout())
            except queue.Empty:
                if self.hook.writer is not None and not self.hook._closed and self._open():
                    self._apply(self._eval.idle())
                continue
            if step is None or self._abandoned:
                return
            if self._open():
                self._apply(self._eval.at_step(step))

    def _apply(self, results: list[tuple[int, RuleResult]]) -> None:
        if self._abandoned:  # close() gave up on a hung rule: its late results are not the run's
            return
        apply_results(self.hook, [(*self.rules[key], res) for key, res in results], self._eval.trial,
                      activity=self._acting)
