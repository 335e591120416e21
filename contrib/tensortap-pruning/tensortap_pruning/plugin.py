"""Registers tensortap-pruning with tensortap (entry-point group "tensortap"): the
`pruning_accuracy` rule, the importance reductions (importance.py) and the `pruning` visualizer."""
from __future__ import annotations

import tensortap

from .rule import PruningAccuracy


@tensortap.hookimpl
def tensortap_register_rules():
    return [PruningAccuracy]


@tensortap.hookimpl
def tensortap_register_visualizers():
    from .plot import PruningPlot

    return [PruningPlot]


@tensortap.hookimpl
def tensortap_register_reductions():
    from .importance import vector_reductions

    return vector_reductions()
