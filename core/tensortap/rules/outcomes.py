"""Rule results as everything that shows them reads them: the three outcomes (fired, quiet: it
checked N tensors and found nothing wrong, skipped: it had nothing to check, and why), a summary
per rule, and one way of naming a step: "step 116 (eval step 20)"."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .results import FIRED, QUIET, SKIPPED, RuleResult, outcome_of

#: what a rule that checked nothing at any step shows as, in `ls`, `rules run` and the report
NO_DATA = "no data"
_SKIP_PREFIX = "skipped: "


def step_label(trial, step: Any) -> str:
    """"step 116 (eval step 20)": the global step, then its mode and that mode's own count, unless
    it is a TRAIN step counted the same both ways ("step 5": a run that only trains). Every rule
    message that names a step, `tensortap ls`, `tensortap rules run` and the report say it this
    way: a bare "step N" is always the global step."""
    try:
        mode, mode_step = trial.mode(step), trial.mode_step(step)
    except Exception:  # noqa: BLE001 - a step the run does not hold (a damaged record): just the number
        mode = mode_step = None
    name = getattr(mode, "value", mode)
    if name is None or mode_step is None or (name == "train" and mode_step == step):
        return f"step {step}"
    return f"step {step} ({name} step {mode_step})"


def as_record(result: Any) -> dict[str, Any]:
    """A RuleResult, or a dict from trial.rule_results(), as such a dict with "outcome" and
    "checked" filled in (None for records written before tensortap counted checked tensors)."""
    if isinstance(result, RuleResult):
        d = {"rule": result.rule, "step": result.step, "fired": result.fired, "message": result.message,
             "values": result.values, "skipped": result.skipped, "checked": result.checked}
    else:
        d = dict(result)
        d.setdefault("checked", None)
    d["outcome"] = outcome_of(d.get("fired"), d.get("skipped"))
    return d


def reason(record: dict[str, Any]) -> str:
    """The message of a skipped result without its "skipped: " prefix."""
    msg = str(record.get("message") or "")
    return msg.removeprefix(_SKIP_PREFIX)


@dataclass
class RuleSummary:
    """What one rule's evaluations add up to."""

    rule: str
    evaluations: int = 0
    fired: int = 0
    quiet: int = 0
    skipped: int = 0
    checked: int = 0  # tensors checked, summed over the evaluations that say
    first_fired: dict[str, Any] | None = None
    reasons: Counter = field(default_factory=Counter)  # skip reason -> how many evaluations gave it

    @property
    def state(self) -> str:
        """"fired", "quiet" (it checked data and never fired) or "no data" (it never checked anything)."""
        return FIRED if self.fired else (QUIET if self.quiet else NO_DATA)

    def add(self, rec: dict[str, Any]) -> None:
        self.evaluations += 1
        out = rec["outcome"]
        if out == FIRED:
            self.fired += 1
            if self.first_fired is None:
                self.first_fired = rec
        elif out == QUIET:
            self.quiet += 1
        else:
            self.skipped += 1
            self.reasons[reason(rec)] += 1
        if isinstance(rec.get("checked"), int) and not isinstance(rec.get("checked"), bool):
            self.checked += rec["checked"]

    def counts(self) -> str:
        """"6 evaluations: 0 fired, 0 quiet, 6 skipped"."""
        return (f"{self.evaluations} evaluations: {self.fired} {FIRED}, {self.quiet} {QUIET}, "
                f"{self.skipped} {SKIPPED}")

    def top_reasons(self, n: int = 3) -> list[str]:
        """The most frequent skip reasons, "why (×count)"."""
        return [f"{r} (×{k})" if k > 1 else r for r, k in self.reasons.most_common(n)]

    def line(self, trial: Any) -> str:
        """The rule in one line, as `tensortap rules run` and `tensortap run` end with it:
        "loss_not_decreasing: 15 evaluations: 2 fired, 0 quiet, 13 skipped, first at step 26
        (eval step 2)"; a rule that never checked anything says so, with why."""
        first = f", first at {step_label(trial, self.first_fired.get('step'))}" if self.first_fired else ""
        line = f"{self.rule}: {self.counts()}{first}"
        if self.state == NO_DATA:
            line += ": checked nothing at any step: " + "; ".join(
                self.top_reasons() or ["no saved step to evaluate in the range asked for"])
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "state": self.state, "evaluations": self.evaluations, "fired": self.fired,
                "quiet": self.quiet, "skipped": self.skipped, "checked": self.checked,
                "skip_reasons": dict(self.reasons.most_common(10))}


def summarise(results: Iterable[Any]) -> list[RuleSummary]:
    """One RuleSummary per rule name (sorted), from RuleResults or trial.rule_results() dicts."""
    out: dict[str, RuleSummary] = {}
    for r in results:
        rec = as_record(r)
        name = str(rec.get("rule"))
        s = out.get(name)
        if s is None:
            s = out[name] = RuleSummary(name)
        s.add(rec)
    return [out[k] for k in sorted(out)]
