"""RuleResult, the three outcomes of an evaluation, and the index records that hold results.

A leaf of `tensortap.rules`: everything that makes, sends, records or shows results imports it,
and it imports nothing of the package."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the three outcomes of an evaluation, everywhere results are shown
FIRED, QUIET, SKIPPED = "fired", "quiet", "skipped"


@dataclass
class RuleResult:
    """One evaluation of a rule at a step: `outcome` is "fired", "quiet" (it checked `checked`
    tensors and found nothing wrong) or "skipped" (it had nothing to check; `message` says why).

    `checked`: how many tensors the evaluation looked at. None when the rule did not say: then
    `Rule.invoke` counts the tensors it read through the trial, and a result that is not fired
    and read none becomes skipped."""

    rule: str
    step: int
    fired: bool
    message: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    checked: int | None = None

    @property
    def outcome(self) -> str:
        return outcome_of(self.fired, self.skipped)

    def to_record(self) -> dict[str, Any]:
        return {"type": "rule", "rule": self.rule, "step": self.step, "fired": bool(self.fired),
                "message": self.message, "values": jsonable(self.values), "skipped": self.skipped,
                "checked": self.checked, "outcome": self.outcome, "time": time.time()}

    def __bool__(self) -> bool:
        return bool(self.fired)

    def _repr_html_(self) -> str:
        from ..reprs import results_html

        return results_html([self])


def outcome_of(fired: Any, skipped: Any) -> str:
    """"fired", "skipped" or "quiet" from a result's flags (a fired result is never skipped)."""
    return FIRED if fired else (SKIPPED if skipped else QUIET)


#: the fields of each result in a "rules" record (Trial.rule_results expands them; records
#: written before "checked" existed lack it and read as checked=None)
RESULT_FIELDS = ("rule", "step", "fired", "message", "values", "skipped", "checked")


def results_record(results: list[RuleResult]) -> dict[str, Any]:
    """ONE index record holding several results (all the rules evaluated at a step): what live
    evaluation writes, cheaper for training than a "rule" record each. `Trial.rule_results()`
    reads it back as one dict per result, like the older per-result records."""
    return {"type": "rules", "time": time.time(), "fields": list(RESULT_FIELDS),
            "results": [[r.rule, r.step, bool(r.fired), r.message, jsonable(r.values), r.skipped, r.checked]
                        for r in results]}


def jsonable(v: Any) -> Any:
    """`v` as JSON can hold it: numpy scalars as numbers, small arrays as lists, big ones and
    anything else as a short text."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 64 else f"<array {v.shape} {v.dtype}>"
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
