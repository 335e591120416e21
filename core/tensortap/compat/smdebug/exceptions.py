"""smdebug's exceptions (`smdebug.exceptions`), so `except TensorUnavailableForStep:` works unchanged.

The ones a trial raises for missing data are also tensortap's StepNotFound / TensorNotFound, so a
smdebug-style rule run by tensortap's rule machinery is "skipped" where smdebug skipped it.
"""
from __future__ import annotations

from typing import Optional

from ...errors import ConfigError, StepNotFound, TensorNotFound, TensorTapError
from ...modes import ModeKeys

modes = ModeKeys


def _mode_name(mode) -> str:
    return getattr(mode, "name", str(mode))


class SMDebugError(TensorTapError):
    pass


class SMDebugCustomerError(SMDebugError):
    pass


class SMDebugTypeError(SMDebugError, TypeError):
    pass


class SMDebugRuntimeError(SMDebugError, RuntimeError):
    pass


class SMDebugValueError(SMDebugError, ConfigError):
    pass


class InvalidCollectionConfiguration(SMDebugError):
    def __init__(self, c_name: str) -> None:
        super().__init__(c_name)
        self.c_name = c_name

    def __str__(self) -> str:
        return f"Collection {self.c_name} has not been configured. Please fill in tensor_name or include_regex"


class StepNotYetAvailable(SMDebugError):
    def __init__(self, step: int, mode=ModeKeys.GLOBAL) -> None:
        super().__init__(step, mode)
        self.step, self.mode = step, mode

    def __str__(self) -> str:
        return f"Step {self.step} of mode {_mode_name(self.mode)} not yet available"


class StepUnavailable(SMDebugError, StepNotFound):
    def __init__(self, step: int, mode=ModeKeys.GLOBAL) -> None:
        super().__init__(step, mode)
        self.step, self.mode = step, mode

    def __str__(self) -> str:
        return f"Step {self.step} of mode {_mode_name(self.mode)} is not available as it was not saved"


class TensorUnavailableForStep(SMDebugError, StepNotFound):
    def __init__(self, tname: str, step: int, mode=ModeKeys.GLOBAL, has_reductions: bool = False) -> None:
        super().__init__(tname, step, mode)
        self.tname, self.step, self.mode, self.has_reductions = tname, step, mode, has_reductions

    def __str__(self) -> str:
        msg = (f"Value for tensor {self.tname} is not available for step {self.step} with mode "
               f"{_mode_name(self.mode)} as it was not saved.")
        if self.has_reductions:
            msg += " This tensor has reductions saved for this step. You might want to query for the reductions."
        return msg


class ShapeUnavailableForStep(SMDebugError, StepNotFound):
    def __init__(self, tname: str, step: int, mode=ModeKeys.GLOBAL) -> None:
        super().__init__(tname, step, mode)
        self.tname, self.step, self.mode = tname, step, mode

    def __str__(self) -> str:
        return f"Shape for tensor {self.tname} is not available for step {self.step} with mode {_mode_name(self.mode)}"


class TensorUnavailable(SMDebugError, TensorNotFound):
    def __init__(self, tname: str) -> None:
        super().__init__(tname)
        self.tname = tname

    def __str__(self) -> str:
        return f"Tensor {self.tname} was not saved."


class InvalidWorker(SMDebugError):
    def __init__(self, worker: Optional[str]) -> None:
        super().__init__(worker)
        self.worker = worker

    def __str__(self) -> str:
        return f"Invalid Worker: {self.worker}"


class NoMoreData(SMDebugError):
    def __init__(self, step: int, mode=ModeKeys.GLOBAL, last_step: int = -1) -> None:
        super().__init__(step, mode, last_step)
        self.step, self.mode, self.last_step = step, mode, last_step
        self.msg = (f"Looking for step {step} of mode {_mode_name(mode)} and reached end of training. "
                    f"Max step available is {last_step}")

    def __str__(self) -> str:
        return self.msg


class RuleEvaluationConditionMet(SMDebugError):
    def __init__(self, rule_name: str, step: int, end_of_rule: bool = False) -> None:
        super().__init__(rule_name, step, end_of_rule)
        self.rule_name, self.step, self.end_of_rule = rule_name, step, end_of_rule

    def __str__(self) -> str:
        return f"Evaluation of the rule {self.rule_name} at step {self.step} resulted in the condition being met"


class InsufficientInformationForRuleInvocation(SMDebugError):
    def __init__(self, rule_name: str, message: str) -> None:
        super().__init__(rule_name, message)
        self.rule_name, self.message = rule_name, message

    def __str__(self) -> str:
        return f"Insufficient information to invoke rule {self.rule_name}: {self.message}"


class NoCounterpart(SMDebugError, ImportError):
    """A part of smdebug tensortap has no counterpart for (the profiler, SageMaker services)."""
