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
        return trial.tensor(self.tensor).steps() if trial.has_tensor(self.tensor) else []

    def invoke_at_step(self, trial, step: int) -> RuleResult:
        acc = float(trial.tensor(self.tensor).value(step))
        fired = acc < self.threshold
        self.seen.append(step)
        if fired:
            self.fired_at.append(step)
        msg = (f"{self.tensor} = {acc:.4f} < {self.threshold:g}" if fired
               else f"{self.tensor} = {acc:.4f} >= {self.threshold:g}")
        return RuleResult(self.name, step, fired, msg, {"accuracy": acc, "threshold": self.threshold})
