"""The one evaluator of every way rules run: offline (`tt.invoke_rule`, `tensortap rules run`), on
the rules thread of a training process, and in the rules process. It reads the run through a
CachedTrial and evaluates its rules at saved steps, in increasing order, each once: what the rules
read at one saved step is read in one go at the next, and values older than LOOK_BACK saved steps
are dropped from the cache."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from .activity import Activity
from .base import Rule
from .cache import CachedTrial
from .results import RuleResult

#: rules look this many saved steps back at most (unchanged_tensor: 2); older cached values are dropped
LOOK_BACK = 4

#: where an evaluator reports a failure it goes on after: (what failed, the exception)
Report = Callable[[str, BaseException], None]
K = TypeVar("K", bound=Hashable)


class Evaluator(Generic[K]):
    """Evaluates `rules` (any keys: the caller's names for them) on one run.

    `trial`: the run, read through a CachedTrial (made here unless it is one); or `out_dir`: the run
    is opened by the first open() and refreshed by each later one (a live run). `report`: failures
    (a rule that raises, a run that cannot be read) are passed to it and evaluation goes on with the
    other rules; None: they raise to the caller (offline)."""

    def __init__(self, trial: Any = None, *, out_dir: str | None = None, report: Report | None = None) -> None:
        if (trial is None) == (out_dir is None):
            raise ValueError("Evaluator needs a trial or an out_dir (one of them)")
        self.out_dir = out_dir
        self.report = report
        self.rules: dict[K, Rule] = {}
        self._view: CachedTrial | None = None
        if trial is not None:
            self._view = trial if isinstance(trial, CachedTrial) else CachedTrial(trial)
        self._recent: deque[int] = deque(maxlen=LOOK_BACK + 1)  # the latest saved steps evaluated
        #: the rule being evaluated now (named if close() has to abandon it)
        self.activity = Activity()

    @property
    def trial(self) -> CachedTrial | None:
        """The run as the rules read it (None until a run given by out_dir is opened)."""
        return self._view

    def open(self) -> bool:
        """Open the run, or pick up what was written since; False (reported) if it cannot be read."""
        try:
            if self._view is None:
                from ..trial import Trial

                self._view = CachedTrial(Trial(self.out_dir))
            else:
                self._view.refresh()
            return True
        except Exception as e:  # noqa: BLE001 - reported; the next step tries again
            self._failed("live rules could not read the run", e)
            return False

    def at_step(self, step: int) -> list[tuple[K, RuleResult]]:
        """Every rule's result at saved step `step` (a run given by out_dir: open() first), in the
        order the rules were added; a rule that fails is reported and has no result."""
        view = self._view
        if view is None:
            raise RuntimeError("Evaluator.at_step before open(): the run is not read yet")
        out: list[tuple[K, RuleResult]] = []
        if self._recent:  # what the rules read at the previous saved step, in one go
            try:
                view.prefetch(step, view.wanted(self._recent[-1]))
            except Exception as e:  # noqa: BLE001 - the rules read one by one and say what is wrong
                self._failed(f"live rules could not read step {step} ahead", e)
        act = self.activity
        for key, rule in list(self.rules.items()):
            act.start(f"rule {rule.name!r} at step {step}")
            try:
                out.append((key, rule.invoke(view, step)))
            except Exception as e:  # noqa: BLE001
                self._failed(f"rule {rule.name} failed at step {step}", e)
            finally:
                act.stop()
        self._recent.append(step)
        view.evict(before=self._recent[0])  # saved steps, not step numbers: save_interval=10 too
        return out

    def idle_timeout(self) -> float | None:
        """Seconds to wait for the next step before the idle checks (None: no rule has one)."""
        iv = [r.idle_interval for r in list(self.rules.values()) if r.idle_interval is not None]
        return min(iv) if iv else None

    def idle(self, now: float | None = None) -> list[tuple[K, RuleResult]]:
        """No step arrived for a while: the rules with an idle check (stalled_training) look at
        the run as it is (a run given by out_dir: open() first); their non-None results."""
        view = self._view
        if view is None:
            return []
        now = time.time() if now is None else now
        out: list[tuple[K, RuleResult]] = []
        for key, rule in list(self.rules.items()):
            if rule.idle_interval is None:
                continue
            self.activity.start(f"rule {rule.name!r} (idle check)")
            try:
                res = rule.invoke_idle(view, now)
            except Exception as e:  # noqa: BLE001
                self._failed(f"rule {rule.name} failed while idle", e)
                continue
            finally:
                self.activity.stop()
            if res is not None:
                out.append((key, res))
        return out

    def _failed(self, what: str, exc: Exception) -> None:
        if self.report is None:
            raise exc
        self.report(what, exc)
