"""An smdebug-style rule as a tensortap rule: what hook.add_rule, `tensortap rules run --rule-file`
and tt.invoke_rule evaluate. The smdebug rule gets a smdebug-compatible view of the trial
tensortap evaluates it on; a step where it lacks data is "skipped", as tensortap rules are."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ....rules.base import Rule as TTRule
from ..exceptions import RuleEvaluationConditionMet
from ..trials import Trial
from .rule import Rule as SmdebugRuleBase


class SmdebugRule(TTRule):
    """Wraps an smdebug Rule class (made with the trial and `params` at first use) or instance
    (given the trial at first use)."""

    name = "smdebug_rule"

    def __init__(self, rule: Any, **params: Any) -> None:
        super().__init__()
        self.cls: type
        self.rule_params: Dict[str, Any]
        self.rule: Optional[SmdebugRuleBase]
        if isinstance(rule, type):
            if not issubclass(rule, SmdebugRuleBase):
                raise TypeError(f"{rule.__qualname__} is not a subclass of tensortap.compat.smdebug.rules.Rule")
            self.cls, self.rule_params, self.rule = rule, params, None
        else:
            if params:
                raise TypeError("parameters go with a rule class; this rule object is made already")
            self.cls, self.rule_params, self.rule = type(rule), {}, rule
        self.name = self.cls.__name__
        self._trial: Optional[Any] = None

    def _bound(self, trial: Any) -> SmdebugRuleBase:
        rule = self.rule
        if self._trial is not trial or rule is None:
            view = Trial(trial)
            if rule is None:
                rule = self.rule = self.cls(view, **self.rule_params)
            else:
                rule.bind_trial(view)
            self._trial = trial
        return rule

    def invoke_at_step(self, trial, step: int):
        rule = self._bound(trial)
        rule.prepare(step)
        try:
            fired = bool(rule.invoke_at_step(step))
        except RuleEvaluationConditionMet:
            fired = True
        msg = f"{self.name}: condition met at step {step}" if fired else f"{self.name}: condition not met"
        return fired, msg

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_trial"] = None  # the rules process gives it its own trial
        return state
