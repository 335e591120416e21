"""Rules over the run's progress: stalled_training."""
from __future__ import annotations

from typing import List, Optional

from ..base import Rule, RuleResult
from ..outcomes import step_label
from ._common import as_bool, result


class StalledTraining(Rule):
    """Fires when no new step was saved for `threshold` seconds.

    Live (hook.add_rule) and with invoke_rule(follow=True) it watches the clock while the run
    is open; over a finished run it reports gaps between consecutive saved steps. With
    stop_training_on_fire the live run is also asked to stop (at its next step boundary)."""

    name = "stalled_training"

    def __init__(self, threshold: float = 1800, stop_training_on_fire: bool = False) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.stop_training_on_fire = as_bool(stop_training_on_fire)
        self.idle_interval = max(0.05, min(self.threshold / 4.0, 60.0))
        self._prev: Optional[float] = None
        self._fired_for: Optional[int] = None

    def implied_actions(self) -> List[str]:
        return ["stop_training"] if self.stop_training_on_fire else []

    def invoke_at_step(self, trial, step: int):
        t = trial.step_time(step)
        prev, self._prev = self._prev, t
        if t is None:
            return self.skip(step, "the run holds no write time for this step")
        if prev is None:
            return self.skip(step, "first saved step: no earlier step to measure the gap from")
        gap = t - prev
        # it checks the time between two saved steps, not tensors: one check per evaluation
        if gap > self.threshold:
            return result(self, step, True, f"no step saved for {gap:.1f} s: {step_label(trial, step)} was written "
                          f"{gap:.1f} s after the previous saved step (threshold {self.threshold:g} s)",
                          {"gap_seconds": gap}, checked=1)
        return result(self, step, False, f"{gap:.2f} s since the previous saved step", {"gap_seconds": gap},
                      checked=1)

    def invoke_idle(self, trial, now: float) -> Optional[RuleResult]:
        if trial.is_complete():
            return None
        last = trial.last_step()
        t = trial.step_time(last) if last is not None else None
        if t is None or last == self._fired_for or now - t <= self.threshold:
            return None
        self._fired_for = last
        return result(self, last, True, f"training stalled: no step saved for {now - t:.1f} s after "
                      f"{step_label(trial, last)} (threshold {self.threshold:g} s)",
                      {"idle_seconds": now - t, "last_step": last})
