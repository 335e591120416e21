"""tt.invoke_rule: one rule over the saved steps of a run, finished or (follow=True) still being
written, with the same Evaluator live rules use."""
from __future__ import annotations

import time
from typing import Any

from ..reprs import RuleResults
from .base import Rule
from .evaluator import Evaluator
from .results import RuleResult


def invoke_rule(rule: Rule, trial: Any, start_step: int = 0, end_step: int | None = None, follow: bool = False,
                poll: float = 0.5, timeout: float | None = None) -> list[RuleResult]:
    """Evaluate `rule` on every saved step in [start_step, end_step); with `follow=True` keep
    tailing a live run until it closes (or `timeout` seconds pass, also while catching up, or
    end_step is reached, or its writer is gone without closing it: `trial.writer_status()` then
    says "dead"). Steps never saved are skipped; this never raises because the run ended (a rule
    that raises does: offline, its error is the caller's)."""
    ev: Evaluator[int] = Evaluator(trial)  # look-back reads hit the evaluator's cache
    ev.rules[0] = rule
    done: set[int] = set()
    results: list[RuleResult] = RuleResults()  # a list that shows as a table in Jupyter
    deadline = None if timeout is None else time.monotonic() + timeout
    last_idle = time.time()
    gone = False

    def wanted(s: int) -> bool:
        return s not in done and s >= start_step and (end_step is None or s < end_step)

    while True:
        for s in rule.steps(trial):
            if not wanted(s):
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return results  # the timeout holds while catching up too
            done.add(s)
            results += [res for _, res in ev.at_step(s)]
        if not follow or gone:
            return results
        if trial.is_complete() or (end_step is not None and any(s >= end_step - 1 for s in done)):
            # one last look: steps written just before the end record
            trial.refresh()
            if not any(wanted(s) for s in rule.steps(trial)):
                return results
            continue
        if deadline is not None and time.monotonic() >= deadline:
            return results
        time.sleep(poll)
        fresh = trial.refresh()
        if not fresh:  # nothing new: a writer that died sends nothing more (one last pass, then stop)
            status = getattr(trial, "writer_status", None)
            gone = callable(status) and status().state == "dead"
            if gone:
                trial.refresh()  # what it wrote just before it died
        if not fresh and rule.idle_interval is not None:
            now = time.time()
            if now - last_idle >= rule.idle_interval:
                last_idle = now
                results += [res for _, res in ev.idle(now)]
