"""Rule: the base class of every check over a trial, built-in or plugin, and how one evaluation's
return value becomes a RuleResult."""
from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from ..errors import StepNotFound, TensorNotFound
from .cache import CachedTrial
from .outcomes import step_label
from .requirements import Need, Needs, as_needs, nothing_checked
from .results import RuleResult


def as_list(value) -> list[str] | None:
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
    #: what the rule reads: it can check something when any one of these is saved (see
    #: `requirements`). Hook.add_rule warns when the hook saves none of them, and an evaluation
    #: that read nothing is skipped with a reason made from them. Empty: one Need per `collections`.
    needs: ClassVar[Needs] = ()
    #: seconds between `invoke_idle` calls while no new step arrives (None: the rule has no idle check)
    idle_interval: float | None = None

    def __init__(self) -> None:
        self.last_result: RuleResult | None = None

    def invoke_at_step(self, trial, step: int):
        raise NotImplementedError

    def invoke_idle(self, trial, now: float) -> RuleResult | None:
        """Called every `idle_interval` seconds while a live run writes no new step (e.g. to
        detect a stalled run); return a RuleResult to record it, or None."""
        return None

    def implied_actions(self) -> list[str]:
        """Names of actions the rule's own parameters ask for (e.g. stop_training_on_fire)."""
        return []

    def requirements(self) -> Needs:
        """What this instance reads (`needs`, or one Need per entry of `collections`); override when
        the parameters change it (a rule given tensor_regex may read anything: return ())."""
        return as_needs(self.needs) or tuple(Need(c) for c in self.collections)

    def skip(self, step: int, why: str) -> RuleResult:
        """A skipped result: the rule had nothing to check at `step`; `why` says what is missing
        and how to get it saved."""
        return RuleResult(self.name, step, False, f"skipped: {why}", skipped=True, checked=0)

    def nothing_to_check(self, trial, step: int) -> str:
        """The reason given when an evaluation read no tensor (default: made from requirements())."""
        return nothing_checked(self.requirements(), trial, step)

    def select_layers(self, trial, step: int, kinds: str | Sequence[str], io: str = "output",
                      name_regex: str | Sequence[str] | None = None) -> list[str]:
        """Names of the tensors saved at `step` that are the `io` ("input"/"output") of a layer of
        one of `kinds` ("relu"), found through the layer classes the run records; plus, for layers
        the run has no class for (runs saved by hand, or by an older tensortap), those whose
        name matches `name_regex`. Gradients of layer tensors are never included."""
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        end = re.compile(rf"/{io}_\d+$")
        out = {n for n in trial.tensor_names(layer_kind=kinds, step=step) if end.search(n)}
        if name_regex is not None:
            out.update(n for n in trial.tensor_names(regex=name_regex, step=step)
                       if not n.startswith("gradients/") and trial.layer_of(n) is None)
        return sorted(out)

    def select(self, trial, step: int, collection_names=None, tensor_regex=None,
               default_collections: Sequence[str] | None = None) -> list[str]:
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

    def steps(self, trial) -> list[int]:
        """The steps this rule is evaluated at (default: every saved global step)."""
        return trial.steps()

    def invoke(self, trial, step: int) -> RuleResult:
        """Evaluate at `step`, normalising the return value. Missing data gives a skipped result;
        so does an evaluation that is not fired and read no tensor through the trial (unless the
        rule said how many it checked: RuleResult.checked), with `nothing_to_check`'s reason."""
        view = trial if isinstance(trial, CachedTrial) else CachedTrial(trial)
        with view.reading() as seen:
            try:
                out = self.invoke_at_step(view, step)
            except StepNotFound as e:
                out = self.skip(step, e.reason)  # without the step: one cause at many steps is counted once
            except TensorNotFound as e:
                out = self.skip(step, str(e))
        if isinstance(out, RuleResult):
            res = out
            res.rule = res.rule or self.name
        elif isinstance(out, tuple):
            fired, msg = out[0], out[1] if len(out) > 1 else ""
            vals = out[2] if len(out) > 2 else {}
            res = RuleResult(self.name, step, bool(fired), str(msg), dict(vals))
        else:
            res = RuleResult(self.name, step, bool(out), f"{self.name} fired at {step_label(view, step)}" if out
                             else "")
        if res.skipped and not res.fired:
            res.checked = 0
        elif res.checked is None:
            res.checked = len(seen)
        if not res.fired and not res.skipped and res.checked == 0:
            res = self.skip(res.step, self.nothing_to_check(view, res.step))
        self.last_result = res
        return res

    @classmethod
    def params(cls) -> dict[str, Any]:
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
