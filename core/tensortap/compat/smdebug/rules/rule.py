"""smdebug's Rule base class (`smdebug.rules.rule.Rule`), for custom rules written against it:

    class GradientsTooSmall(Rule):
        def __init__(self, base_trial, threshold=1e-7):
            super().__init__(base_trial)
            self.threshold = threshold

        def invoke_at_step(self, step):
            for name in self.base_trial.tensor_names(collection="gradients"):
                if abs(self.base_trial.tensor(name).reduction_value(step, "mean", abs=True)) < self.threshold:
                    return True
            return False

Unlike smdebug 1.0.34, `action_str` is optional (its documentation omitted it, its code required
it). smdebug's actions (StopTraining, Email, SMS through SageMaker) have no counterpart: pass
tensortap actions to hook.add_rule instead.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, List, Optional

from ..exceptions import NoCounterpart, RuleEvaluationConditionMet
from ..trials import as_trial
from .req_tensors import RequiredTensors


class Rule(ABC):
    def __init__(self, base_trial: Any, action_str: Any = "", other_trials: Optional[List[Any]] = None) -> None:
        if isinstance(action_str, (list, tuple)) and other_trials is None:  # Rule(base_trial, [other trials])
            other_trials, action_str = list(action_str), ""
        if action_str:
            raise NoCounterpart(
                f"action_str={action_str!r}: smdebug's rule actions (StopTraining, Email, SMS) are SageMaker "
                "services with no counterpart in tensortap; use hook.add_rule(rule, action=\"stop_training\" / "
                "\"log\" / \"webhook\" / a callable) instead")
        self.other_trials = [as_trial(t) for t in other_trials] if other_trials else None
        self.logger = logging.getLogger("tensortap")
        self.rule_name = self.__class__.__name__
        self.report = {"RuleTriggered": 0, "Violations": 0, "Details": {}, "Datapoints": 0, "RuleParameters": ""}
        self.bind_trial(base_trial)

    def bind_trial(self, base_trial: Any) -> None:
        """Evaluate over `base_trial` from now on (live and command-line evaluation give the rule
        the run's trial; a rule made for live use may be made with base_trial=None)."""
        self.base_trial = as_trial(base_trial) if base_trial is not None else None
        self.trials = ([self.base_trial] if self.base_trial is not None else []) + list(self.other_trials or [])
        self.req_tensors = RequiredTensors(self.base_trial, self.other_trials)

    def set_required_tensors(self, step: int) -> None:  # noqa: B027 (optional override, as in smdebug)
        """Declare what invoke_at_step reads: self.req_tensors.add(name, steps=[...])."""

    @abstractmethod
    def invoke_at_step(self, step: int) -> bool:
        """True when the rule's condition is met at (global) step `step`."""

    def prepare(self, step: int) -> None:
        """Fetch what the rule declared it needs at `step` (a missing value raises smdebug's exception)."""
        self.req_tensors.clear()
        self.set_required_tensors(step)
        self.req_tensors.fetch()

    def invoke(self, step: int) -> None:
        """Wait for `step`, fetch the required tensors, evaluate; raise RuleEvaluationConditionMet when met."""
        if self.base_trial is None:
            raise RuntimeError(f"rule {self.rule_name} has no trial: make it with a trial from create_trial(run)")
        self.base_trial.wait_for_steps([step])
        self.prepare(step)
        if self.invoke_at_step(step):
            raise RuleEvaluationConditionMet(self.rule_name, step)
