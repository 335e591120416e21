"""The importance criteria tensortap-pruning ranks channels by, registered with tensortap as vector
reductions (tt.VectorReduction): the Hook computes one small vector per tapped tensor per saved
step, where the tensor lives, and stores it instead of the tensor.

| criterion | reduction   | computed from                        | per channel k                                      |
|-----------|-------------|--------------------------------------|----------------------------------------------------|
| taylor    | "taylor"    | feature map z (batch, C, ...), dC/dz | mean over examples of abs(spatial mean of z*dC/dz) |
| l1        | "filter_l1" | a producer's weight (C, ...)         | sum of abs(weights) of filter k                    |
| bn_scale  | "bn_scale"  | a norm layer's weight (C,)           | abs(gamma_k)                                       |
| random    | "random"    | any feature map (batch, C, ...)      | uniform [0, 1) (a baseline)                        |

Taylor follows Molchanov et al. 2017: the absolute value is taken per example, before averaging over
examples and steps (opposite signs do not cancel); the pruner then averages the saved vectors over
steps and L2-normalises each layer (`taylor.l2_normalise`). The numpy functions here are the
reference; importance_torch.py computes the same on the tensor's device. Imports no framework.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import tensortap as tt

from .taylor import taylor_scores

#: criterion -> the vector reduction computing it
REDUCTION_OF: Dict[str, str] = {"taylor": "taylor", "l1": "filter_l1", "bn_scale": "bn_scale", "random": "random"}
CRITERIA = tuple(REDUCTION_OF)

_rng = np.random.default_rng(0)


def taylor_numpy(activation: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Taylor importance per channel of one batch: mean over examples of |spatial mean of a*g|."""
    return taylor_scores(activation, gradient)


def filter_l1(weight: Any) -> np.ndarray:
    """L1 norm of each output filter of a conv/linear weight (out, ...)."""
    w = np.abs(np.asarray(weight, dtype=np.float64))
    return w.reshape(w.shape[0], -1).sum(axis=1)


def bn_scale(weight: Any) -> np.ndarray:
    """|gamma| of a norm layer's weight (C,)."""
    return np.abs(np.asarray(weight, dtype=np.float64)).reshape(-1)


def random_scores(tensor: Any) -> np.ndarray:
    """A uniform random score per channel (dim 1) of `tensor`: a baseline. Reads only its shape,
    so the same function serves numpy arrays and framework tensors (no copy)."""
    return _rng.random(int(tensor.shape[1]))


def seed_random(seed: int) -> None:
    """Make the random criterion reproducible."""
    global _rng
    _rng = np.random.default_rng(seed)


def vector_reductions() -> List[tt.VectorReduction]:
    """The four reductions, as the plugin registers them."""
    here, dev = "tensortap_pruning.importance", "tensortap_pruning.importance_torch"
    return [
        tt.VectorReduction("taylor", f"{here}:taylor_numpy", inputs=("value", "gradient"),
                           implementations={"torch": f"{dev}:taylor"},
                           description="Taylor importance per channel (Molchanov 2017) of a feature map and its "
                                       "gradient"),
        tt.VectorReduction("filter_l1", f"{here}:filter_l1", implementations={"torch": f"{dev}:filter_l1"},
                           description="L1 norm of each output filter of a weight"),
        tt.VectorReduction("bn_scale", f"{here}:bn_scale", implementations={"torch": f"{dev}:bn_scale"},
                           description="|gamma| per channel of a norm layer's weight"),
        tt.VectorReduction("random", f"{here}:random_scores", implementations={"torch": f"{here}:random_scores"},
                           description="uniform random score per channel (a baseline)"),
    ]
