"""Rules: checks over captured tensors, live or offline. `tt.rules.list()`, `tt.rules.get(name)`.

Importing the package lets plugins register rules and actions (the built-in ones are plugins too)."""
from __future__ import annotations

import builtins
from typing import Any, Dict, Type

from .. import plugins
from ..errors import ConfigError, did_you_mean
from .actions import Action, ActionContext
from .base import Rule
from .offline import invoke_rule
from .outcomes import RuleSummary, step_label, summarise
from .requirements import Need, RuleNeedsWarning
from .results import RuleResult

plugins.add_table(plugins.Table("rules", "tensortap_register_rules", Rule, "tensortap.rules.Rule", classes=True),
                  builtins=("tensortap.rules.builtin",))
plugins.add_table(plugins.Table("actions", "tensortap_register_actions", Action, "tensortap.rules.Action",
                                classes=True), builtins=("tensortap.rules.actions",))


def list() -> builtins.list[str]:  # mirrors the documented tt.rules.list()
    """Names of every registered rule, built-in or plugin."""
    return sorted(plugins.get_registry().rules)


def get(name: str) -> Type[Rule]:
    """The Rule class registered under `name` (a clear error with suggestions otherwise)."""
    cls: Type[Rule] = plugins.get_registry().get("rules", name)
    return cls


def make_rule(name: str, params: Dict[str, Any]) -> Rule:
    """Instantiate rule `name` with `params`, with a clear error for an unknown parameter."""
    cls = get(name)
    known = cls.params()
    for k in params:
        if k not in known:
            raise ConfigError(f"rule {name!r} has no parameter {k!r}." + did_you_mean(k, known)
                              + f" Its parameters: {', '.join(known) or 'none'}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"rule {name!r}: bad parameter value ({e})") from None


def list_actions() -> builtins.list[str]:
    """Names of every registered action (what add_rule's `action=` takes by name)."""
    return sorted(plugins.get_registry().actions)


def get_action(name: str) -> Type[Action]:
    """The Action class registered under `name`."""
    cls: Type[Action] = plugins.get_registry().get("actions", name)
    return cls


__all__ = ["Action", "ActionContext", "Need", "Rule", "RuleNeedsWarning", "RuleResult", "RuleSummary", "get",
           "get_action", "invoke_rule", "list", "list_actions", "make_rule", "step_label", "summarise"]
