"""A rule watching the accuracy the pruner records: fires when it falls below a floor."""
from __future__ import annotations

from typing import List

from tensortap.rules import Rule, RuleResult

from .scalars import SCALARS


class PruningAccuracy(Rule):
    """Fires when the scalar `tensor` (default pruning/accuracy) is below `threshold`.

    Pair it with action "stop_training" to end iterative pruning when accuracy drops."""

    name = "pruning_accuracy"
    collections = ("pruning",)

    def __init__(self, threshold: float = 0.9, tensor: str = SCALARS["accuracy"]) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.tensor = str(tensor)
        self.fired_at: List[int] = []
        self.seen: List[int] = []

    def steps(self, trial) -> List[int]:
        """The steps the accuracy was saved at; every step when it never was (each says why it is skipped)."""
        return trial.tensor(self.tensor).steps() if trial.has_tensor(self.tensor) else trial.steps()

    def invoke_at_step(self, trial, step: int) -> RuleResult:
        if step not in (trial.tensor(self.tensor).steps() if trial.has_tensor(self.tensor) else ()):
            return self.skip(step, f"no {self.tensor!r} saved at this step: tensortap_pruning's Pruner saves it "
                             "(hook.save_scalar) once per pruning iteration; pass tensor=NAME to watch another scalar")
        acc = float(trial.tensor(self.tensor).value(step))
        fired = acc < self.threshold
        self.seen.append(step)
        if fired:
            self.fired_at.append(step)
        msg = (f"{self.tensor} = {acc:.4f} < {self.threshold:g}" if fired
               else f"{self.tensor} = {acc:.4f} >= {self.threshold:g}")
        return RuleResult(self.name, step, fired, msg, {"accuracy": acc, "threshold": self.threshold})
