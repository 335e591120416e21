"""The scalars the pruner saves once per iteration (hook.save_scalar), read by its rule and plot."""
from __future__ import annotations

from typing import Dict

#: key -> stored name
SCALARS: Dict[str, str] = {"params": "pruning/params", "size_mb": "pruning/size_mb", "accuracy": "pruning/accuracy"}
