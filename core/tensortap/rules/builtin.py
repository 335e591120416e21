"""The built-in rules (smdebug's rule set, open), registered as a plugin."""
from __future__ import annotations

from ..hookspecs import hookimpl

BUILTIN_RULES: list = []


@hookimpl
def tensortap_register_rules():
    return list(BUILTIN_RULES)
