"""Registers the `pruning_accuracy` rule with tensortap (entry-point group "tensortap")."""
from __future__ import annotations

import tensortap

from .rule import PruningAccuracy


@tensortap.hookimpl
def tensortap_register_rules():
    return [PruningAccuracy]
