"""The Taylor criterion of Molchanov et al. 2017, computed from tensors a tensortap run captured.

For a feature map z (batch, C, h, w) and the gradient of the loss with respect to it:

    Theta_k = mean over examples m of | (1/M) sum over positions of z_mk * dC/dz_mk |

(the absolute value is taken per example, before any averaging over examples or steps, so
opposite-signed contributions do not cancel), then each layer's scores are L2-normalised,
Theta / sqrt(sum Theta^2), so layers of different depth and scale are comparable.
Framework-free: numpy in, numpy out.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np


def taylor_per_example(activation: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """|spatial mean of activation*gradient|, shape (batch, C), for (batch, C, ...) arrays."""
    a = np.asarray(activation, dtype=np.float64)
    g = np.asarray(gradient, dtype=np.float64)
    if a.shape != g.shape or a.ndim < 2:
        raise ValueError(f"activation and gradient must have the same (batch, channels, ...) shape, "
                         f"got {a.shape} and {g.shape}")
    prod = (a * g).reshape(a.shape[0], a.shape[1], -1)
    return np.abs(prod.mean(axis=2))


def taylor_scores(activation: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Unnormalised Theta per channel (C,): per-example criterion averaged over the batch."""
    return taylor_per_example(activation, gradient).mean(axis=0)


def l2_normalise(scores: np.ndarray) -> np.ndarray:
    """Theta / sqrt(sum Theta^2) (an all-zero layer stays zero)."""
    s = np.asarray(scores, dtype=np.float64)
    n = float(np.sqrt((s * s).sum()))
    return s / n if n > 0 else s


def output_name(layer: str, i: int = 0) -> str:
    """Stored name of a layer output (tensortap's contract: `<layer>/output_<i>`)."""
    return f"{layer}/output_{i}"


def gradient_name(layer: str, i: int = 0) -> str:
    """Stored name of the gradient of a layer output: `gradients/<layer>/output_<i>`."""
    return f"gradients/{layer}/output_{i}"


def layer_scores_from_trial(trial, layers: Iterable[str],
                            steps: Optional[Sequence[int]] = None) -> Dict[str, np.ndarray]:
    """Theta per channel for each layer, averaged over the saved `steps` (default: every step
    holding both the layer's output and its gradient); layers with no such step are left out."""
    trial.refresh()
    out: Dict[str, np.ndarray] = {}
    for layer in layers:
        oname, gname = output_name(layer), gradient_name(layer)
        if not (trial.has_tensor(oname) and trial.has_tensor(gname)):
            continue
        t_out, t_grad = trial.tensor(oname), trial.tensor(gname)
        have = sorted(set(t_out.steps()) & set(t_grad.steps()))
        if steps is not None:
            want = set(int(s) for s in steps)
            have = [s for s in have if s in want]
        acc: List[np.ndarray] = []
        for s in have:
            a, g = t_out.value(s), t_grad.value(s)
            if a.shape != g.shape:
                continue
            acc.append(taylor_scores(a, g))
        if acc:
            out[layer] = np.mean(acc, axis=0)
    return out


def group_scores(layer_scores: Dict[str, np.ndarray], taps: Sequence[str]) -> Optional[np.ndarray]:
    """Score of each channel of a group: mean over its tapped layers of the L2-normalised Theta."""
    got = [l2_normalise(layer_scores[t]) for t in taps if t in layer_scores]
    if not got:
        return None
    return np.mean(got, axis=0)
