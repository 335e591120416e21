"""Rules: checks over captured tensors, live or offline. `tt.rules.list()`, `tt.rules.get(name)`."""
from __future__ import annotations

from typing import List

from .actions import Action, ActionContext
from .base import Rule
from .offline import invoke_rule
from .outcomes import RuleSummary, step_label, summarise
from .requirements import Need, RuleNeedsWarning
from .results import RuleResult


def list() -> List[str]:  # noqa: A001 - mirrors the documented tt.rules.list()
    """Names of every registered rule, built-in or plugin."""
    from ..plugins import get_registry

    return sorted(get_registry().rules)


def get(name: str) -> type:
    """The Rule class registered under `name` (a clear error with suggestions otherwise)."""
    from ..plugins import get_registry

    return get_registry().get("rules", name)


def list_actions() -> List[str]:
    from ..plugins import get_registry

    return sorted(get_registry().actions)


def get_action(name: str) -> type:
    from ..plugins import get_registry

    return get_registry().get("actions", name)


__all__ = ["Rule", "RuleResult", "Need", "RuleNeedsWarning", "RuleSummary", "summarise", "step_label", "Action",
           "ActionContext", "invoke_rule", "list", "get", "list_actions", "get_action"]
