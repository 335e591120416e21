"""tensortap-pruning: iterative filter pruning of PyTorch CNNs ranked by the Taylor criterion
(Molchanov et al. 2017, the default), filter L1 norm, BatchNorm scale or at random, each computed
by tensortap while it captures (one small vector per layer per saved step).

Importing this package does not import torch (the plugin entry point registers the
`pruning_accuracy` rule, the importance reductions and the `pruning` visualizer); the torch parts
load on first use.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from tensortap.framework_versions import check_versions
from tensortap_torch.plugin import TORCH

from .importance import CRITERIA
from .rule import PruningAccuracy
from .taylor import group_scores, l2_normalise, layer_scores_from_trial, taylor_per_example, taylor_scores

__version__ = "0.1.0"

_LAZY = {
    "TaylorPruner": ".pruner", "PruneStep": ".pruner",
    "analyse": ".graph", "ChannelGroup": ".graph",
    "remove_channels": ".surgery", "params_removed": ".surgery", "plan_removal": ".surgery",
    "count_params": ".surgery", "size_mb": ".surgery",
}

__all__ = ["CRITERIA", "PruningAccuracy", "taylor_per_example", "taylor_scores", "l2_normalise",
           "layer_scores_from_trial", "group_scores"] + list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        check_versions((TORCH,), __name__)  # the torch versions tensortap-torch supports, once, before torch loads
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'tensortap_pruning' has no attribute {name!r}")
