"""Rule, RuleResult and invoke_rule: framework-free checks over a trial."""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..errors import StepNotFound, TensorNotFound


@dataclass
class RuleResult:
    """One evaluation of a rule at a step."""

    rule: str
    step: int
    fired: bool
    message: str = ""
    values: Dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def to_record(self) -> dict:
        return {"type": "rule", "rule": self.rule, "step": self.step, "fired": bool(self.fired),
                "message": self.message, "values": _jsonable(self.values), "skipped": self.skipped,
                "time": time.time()}

    def __bool__(self) -> bool:
        return bool(self.fired)

    def _repr_html_(self) -> str:
        from ..reprs import results_html

        return results_html([self])


#: the fields of each result in a "rules" record (Trial.rule_results expands them)
RESULT_FIELDS = ("rule", "step", "fired", "message", "values", "skipped")


def results_record(results: List[RuleResult]) -> dict:
    """ONE index record holding several results (all the rules evaluated at a step): what live
    evaluation writes, cheaper for training than a "rule" record each. `Trial.rule_results()`
    reads it back as one dict per result, like the older per-result records."""
    return {"type": "rules", "time": time.time(), "fields": list(RESULT_FIELDS),
            "results": [[r.rule, r.step, bool(r.fired), r.message, _jsonable(r.values), r.skipped] for r in results]}


def _jsonable(v):
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 64 else f"<array {v.shape} {v.dtype}>"
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def as_list(value) -> Optional[List[str]]:
    """None, a list, or a comma-separated string (what the CLI passes) -> a list of strings or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] or None
    return [str(v) for v in value] or None


class Rule:
    """Base class of every rule, built-in or plugin.

    Subclasses set a unique `name`, take their parameters in `__init__` (calling
    `super().__init__()`), and implement `invoke_at_step(trial, step)`, returning a bool,
    a `(bool, message)` pair, or a RuleResult. Rules read data only through the trial.
    A rule may keep state across steps (steps arrive in increasing order).
    """

    name: str = "rule"
    #: collections whose tensors the rule reads (documentation and the report)
    collections: tuple = ()
    #: seconds between `invoke_idle` calls while no new step arrives (None: the rule has no idle check)
    idle_interval: Optional[float] = None

    def __init__(self) -> None:
        self.last_result: Optional[RuleResult] = None

    def invoke_at_step(self, trial, step: int):
        raise NotImplementedError

    def invoke_idle(self, trial, now: float) -> Optional[RuleResult]:
        """Called every `idle_interval` seconds while a live run writes no new step (e.g. to
        detect a stalled run); return a RuleResult to record it, or None."""
        return None

    def implied_actions(self) -> List[str]:
        """Names of actions the rule's own parameters ask for (e.g. stop_training_on_fire)."""
        return []

    def select(self, trial, step: int, collection_names=None, tensor_regex=None,
               default_collections: Optional[Sequence[str]] = None) -> List[str]:
        """Names of tensors saved at `step` in any of `collection_names` or matching any of
        `tensor_regex` (the union, as smdebug did); with neither, `default_collections`
        (None: every tensor)."""
        colls, regex = as_list(collection_names), as_list(tensor_regex)
        if not colls and not regex:
            if default_collections is None:
                return trial.tensor_names(step=step)
            colls = list(default_collections)
        out = set()
        if colls:
            out.update(trial.tensor_names(collection=colls, step=step))
        if regex:
            out.update(trial.tensor_names(regex=regex, step=step))
        return sorted(out)

    def steps(self, trial) -> List[int]:
        """The steps this rule is evaluated at (default: every saved global step)."""
        return trial.steps()

    def invoke(self, trial, step: int) -> RuleResult:
        """Evaluate at `step`, normalising the return value; missing data gives a skipped result."""
        try:
            out = self.invoke_at_step(trial, step)
        except (StepNotFound, TensorNotFound) as e:
            return RuleResult(self.name, step, False, f"skipped: {e}", skipped=True)
        if isinstance(out, RuleResult):
            res = out
            res.rule = res.rule or self.name
        elif isinstance(out, tuple):
            fired, msg = out[0], out[1] if len(out) > 1 else ""
            vals = out[2] if len(out) > 2 else {}
            res = RuleResult(self.name, step, bool(fired), str(msg), dict(vals))
        else:
            res = RuleResult(self.name, step, bool(out), f"{self.name} fired at step {step}" if out else "")
        self.last_result = res
        return res

    @classmethod
    def params(cls) -> Dict[str, Any]:
        """Constructor parameters and their defaults (for `tensortap rules list`)."""
        out = {}
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = None if p.default is inspect.Parameter.empty else p.default
        return out

    @classmethod
    def describe(cls) -> str:
        return (inspect.getdoc(cls) or "").split("\n\n")[0]

    def __repr__(self) -> str:
        return f"<Rule {self.name}>"


def invoke_rule(rule: Rule, trial, start_step: int = 0, end_step: Optional[int] = None, follow: bool = False,
                poll: float = 0.5, timeout: Optional[float] = None) -> List[RuleResult]:
    """Evaluate `rule` on every saved step in [start_step, end_step); with `follow=True` keep
    tailing a live run until it closes (or `timeout` seconds pass, or end_step is reached).
    Steps never saved are skipped; this never raises because the run ended."""
    from ..reprs import RuleResults
    from .cache import CachedTrial

    done = set()
    done_last: Optional[int] = None
    results: List[RuleResult] = RuleResults()  # a list that shows as a table in Jupyter
    deadline = None if timeout is None else time.monotonic() + timeout
    last_idle = time.time()
    view = trial if isinstance(trial, CachedTrial) else CachedTrial(trial)  # look-back reads hit memory
    while True:
        for s in rule.steps(trial):
            if s in done or s < start_step or (end_step is not None and s >= end_step):
                continue
            done.add(s)
            if done_last is not None:  # what the rule read at its previous step, in one go
                view.prefetch(s, view.wanted(done_last))
            done_last = s
            results.append(rule.invoke(view, s))
            view.evict(before=s - 4)
        if not follow:
            return results
        if trial.is_complete() or (end_step is not None and any(s >= end_step - 1 for s in done)):
            # one last look: steps written just before the end record
            trial.refresh()
            if all(s in done or s < start_step or (end_step is not None and s >= end_step) for s in rule.steps(trial)):
                return results
            continue
        if deadline is not None and time.monotonic() >= deadline:
            return results
        time.sleep(poll)
        if not trial.refresh() and rule.idle_interval is not None:
            now = time.time()
            if now - last_idle >= rule.idle_interval:
                last_idle = now
                res = rule.invoke_idle(trial, now)
                if res is not None:
                    results.append(res)
