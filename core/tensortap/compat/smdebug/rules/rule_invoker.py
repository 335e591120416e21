"""smdebug's invoke_rule (`smdebug.rules.rule_invoker.invoke_rule`).

Steps are tried one after another from start_step; end_step is exclusive. A step that was not
saved, or that lacks a tensor the rule needs, is skipped. With end_step=None the rule follows a
live run and, once the run has ended, raises NoMoreData past its last step, as smdebug did
(`except NoMoreData:` ends such a loop). With raise_eval_cond=True the first step where the
condition is met raises RuleEvaluationConditionMet.
"""
from __future__ import annotations

import logging
from typing import Optional

from ..exceptions import RuleEvaluationConditionMet, StepUnavailable, TensorUnavailable, TensorUnavailableForStep

log = logging.getLogger("tensortap")


def invoke_rule(rule_obj, start_step: Optional[int] = 0, end_step: Optional[int] = None,
                raise_eval_cond: bool = False) -> None:
    step = start_step if start_step is not None else 0
    trial = rule_obj.base_trial
    while end_step is None or step < end_step:
        nxt = trial.next_step(step) if trial is not None else None
        if nxt is not None and nxt > step:  # steps never saved are skipped, as smdebug's StepUnavailable did
            step = nxt
            continue
        try:
            rule_obj.invoke(step)
        except (TensorUnavailableForStep, StepUnavailable, TensorUnavailable) as e:
            log.debug("%s", e)
        except RuleEvaluationConditionMet as e:
            if raise_eval_cond:
                raise
            log.info("%s", e)
            if e.end_of_rule:
                break
        step += 1
