"""What a run holds, in one dict: steps (per mode), workers, collections, tensors and bytes, rule
outcomes and firings, events and problems. `tensortap ls` prints it and the report shows it."""
from __future__ import annotations

from typing import Any

from .rules.outcomes import step_label, summarise


def human_size(n: float) -> str:
    """A byte count for people: "512 B", "1.5 KB", "3.2 GB"."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run_summary(trial: Any) -> dict[str, Any]:
    """The summary of the run `trial` reads (see the module's docstring)."""
    steps = trial.steps()
    modes = {}
    for m in ("train", "eval", "predict"):
        s = trial.steps(mode=m)
        if s:
            modes[m] = len(s)
    rules = trial.rule_results()
    fired = [r for r in rules if r.get("fired")]
    per_rule = summarise(rules)
    return {
        "run": trial.path,
        "framework": trial.framework,
        "complete": trial.is_complete(),
        "workers": trial.workers(),
        "steps": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        "steps_per_mode": modes,
        "collections": {c: len(n) for c, n in trial.collections().items()},
        "tensors": len(trial.tensor_names()),
        "bytes": trial.total_bytes(),
        "rule_evaluations": len(rules),
        "rules": [p.to_dict() for p in per_rule],
        "rules_fired": [{"rule": r["rule"], "step": r["step"], "step_label": step_label(trial, r["step"]),
                         "message": r.get("message", "")} for r in fired],
        "problems": trial.problems,
        "events": list(trial.events()),
    }
