"""What the training process does with the results of live rules, wherever they were evaluated
(the rules thread or the rules process): records them in the run, runs the actions of those that
fired, and lets the actions finish their pending work when the run closes."""
from __future__ import annotations

from typing import Any

from .actions import Action, ActionContext
from .activity import Activity
from .base import Rule
from .results import RuleResult, results_record

#: a rule attached to a hook, with the actions to run when it fires
Attached = tuple[Rule, list[Action]]


def apply_results(hook: Any, items: list[tuple[Rule, list[Action], RuleResult]], trial: Any = None,
                  record: dict[str, Any] | None = None, activity: Activity | None = None) -> None:
    """Record results in the run, all in ONE index record (`record`, made by results_record in
    the rules process, or made here), then run the actions of those that fired (failures are
    reported; `activity` says which action runs, for close() to name one that hangs)."""
    if not items:
        return
    if hook.writer is not None:
        hook.writer.submit_record(record if record is not None else results_record([res for _, _, res in items]))
    act = activity or Activity()
    for rule, actions, res in items:
        if res.fired:
            for a in actions:
                act.start(f"action {a.describe()} for rule {rule.name!r} at step {res.step}")
                try:
                    a.run(ActionContext(rule, res, hook, trial))
                except Exception as e:  # noqa: BLE001
                    hook._report(f"action {a.name} for rule {rule.name} failed", e)
                finally:
                    act.stop()


def close_actions(rules: list[Attached], deadline: float | None) -> list[str]:
    """Let each distinct action finish its pending work (webhook sends) until `deadline`
    (time.monotonic(); None: no limit); what is still pending then is abandoned and named."""
    seen: dict[int, Action] = {}
    for _, actions in rules:
        for a in actions:
            seen.setdefault(id(a), a)
    abandoned: list[str] = []
    for a in seen.values():
        try:
            abandoned += a.close(deadline)
        except Exception as e:  # noqa: BLE001 - an action's close must not stop the run's
            abandoned.append(f"action {a.describe()} (its close failed: {type(e).__name__}: {e})")
    return abandoned
