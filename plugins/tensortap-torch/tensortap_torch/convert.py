"""Torch tensors to numpy copies, and reductions computed with torch ops on the tensor's device.

`reduce_torch` agrees with `tensortap.reductions.reduce_numpy(to_numpy(t))`: values that numpy
computes in float64 are computed in float64 here, and histogram bins use the very edges numpy
would use (linspace in the data's float dtype), so every element lands in the same bin.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable

import numpy as np
import torch

#: dtypes numpy has no equivalent for: stored as float32 (exact for every value they hold).
_WIDEN = {torch.bfloat16} | {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                                         "float8_e5m2fnuz") if hasattr(torch, n)}


def plain(t: torch.Tensor) -> torch.Tensor:
    """A detached, dense, strided tensor with a dtype numpy knows (bfloat16/float8 -> float32)."""
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.dtype in _WIDEN:
        t = t.float()
    return t


def to_numpy(value: Any) -> np.ndarray:
    """A C-contiguous numpy copy of `value` that no later in-place update can change."""
    if not isinstance(value, torch.Tensor):
        return np.array(value, copy=True)
    t = plain(value)
    if t.device.type != "cpu":
        return np.ascontiguousarray(t.cpu().numpy())  # .cpu() already made a fresh host copy
    return np.array(t.numpy(), copy=True, order="C")  # CPU .numpy() shares memory: copy


def _bin_dtype(t: torch.Tensor) -> np.dtype:
    """The dtype numpy's histogram computes its edges in for the array to_numpy(t) gives."""
    if t.dtype == torch.float16:
        return np.dtype(np.float16)
    if t.dtype == torch.float32 or t.dtype in _WIDEN:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _work_tensor(t: torch.Tensor) -> torch.Tensor:
    """The flat tensor reductions run on: float32/float64 kept, halves widened to float32, complex as
    |z| and integers/bools as float64 (what reduce_numpy does)."""
    if t.is_complex():
        return t.abs().double().reshape(-1)
    if not t.is_floating_point():
        return t.double().reshape(-1)
    if t.dtype not in (torch.float32, torch.float64):
        return t.float().reshape(-1)
    return t.reshape(-1)


def _histogram(f: torch.Tensor, bins: int, edge_dtype: np.dtype) -> np.ndarray:
    finite = f[torch.isfinite(f)] if f.is_floating_point() else f
    if finite.numel() == 0:
        return np.concatenate([np.zeros(bins), np.linspace(0.0, 1.0, bins + 1)])
    lo_t, hi_t = torch.aminmax(finite)
    lo, hi = float(lo_t), float(hi_t)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1, dtype=edge_dtype)
    # the same edges in the data's own dtype (exact): every comparison is the one numpy makes
    e = torch.from_numpy(edges.astype(np.float64)).to(device=f.device, dtype=f.dtype)
    idx = (torch.bucketize(finite, e, right=True) - 1).clamp_(0, bins - 1)
    counts = torch.bincount(idx, minlength=bins)[:bins]
    return np.concatenate([counts.double().cpu().numpy(), edges.astype(np.float64)])


def reduce_torch(tensor: torch.Tensor, names: Iterable[str], bins: int = 64) -> Dict[str, np.ndarray]:
    """Every requested reduction of `tensor`, computed where it lives, one pass per group, no copy
    of float32/float64 data, and a single host transfer. Agrees with reduce_numpy to float32
    rounding (sums accumulate in float64, as numpy's do)."""
    names = list(names)
    t = plain(tensor)
    f = _work_tensor(t)
    n = f.numel()
    dev = f.device
    out: Dict[str, np.ndarray] = {}
    scalars: Dict[str, Any] = {}
    is_float = t.is_floating_point()
    zero, nan = 0.0, float("nan")  # constants: no device tensors made for them
    cache: Dict[str, torch.Tensor] = {}

    def minmax():
        if "min" not in cache:
            cache["min"], cache["max"] = torch.aminmax(f)
        return cache["min"], cache["max"]

    def var_mean():
        """Population variance and mean, accumulated in float64. On the CPU from sum and sum of
        squares (two fast passes); where that would cancel (spread tiny against the mean), and
        always on accelerators, from the centred values as numpy does."""
        if "var" not in cache:
            mean = f.sum(dtype=torch.float64) / n
            var = None
            if dev.type == "cpu":
                var = norm(2).double() ** 2 / n - mean * mean
                if not bool(var > 1e-6 * mean * mean):
                    var = None
            if var is None:
                c = f.double() - mean
                var = (c * c).mean()
            cache["var"], cache["mean"] = var.clamp(min=0), mean
        return cache["var"], cache["mean"]

    def norm(order):
        key = f"l{order}"
        if key not in cache:
            cache[key] = torch.linalg.vector_norm(f, order, dtype=torch.float64)
        return cache[key]

    for name in names:
        if name == "histogram":
            out[name] = _histogram(f, bins, _bin_dtype(t))
            continue
        if name == "nan_count":
            v = torch.isnan(f).sum() if is_float else zero
        elif name == "inf_count":
            v = torch.isinf(f).sum() if is_float else zero
        elif name == "zero_count":
            v = n - torch.count_nonzero(f) if n else zero
        elif n == 0:
            v = nan
        elif name in ("min", "max"):
            v = minmax()[name == "max"]
        elif name == "mean":
            v = var_mean()[1]
        elif name == "std":
            v = var_mean()[0].sqrt()
        elif name == "variance":
            v = var_mean()[0]
        elif name == "sum":
            v = f.sum(dtype=torch.float64)
        elif name == "l1":
            v = norm(1)
        elif name == "l2":
            v = norm(2)
        elif name in ("abs_min", "abs_max"):
            v = torch.aminmax(f.abs())[name == "abs_max"]
        elif name == "abs_mean":
            v = norm(1).double() / n
        else:
            from tensortap.errors import ConfigError

            raise ConfigError(f"unknown reduction {name!r}")
        scalars[name] = v
    computed = [k for k, v in scalars.items() if isinstance(v, torch.Tensor)]
    if computed:
        values = torch.stack([scalars[k].double() for k in computed]).cpu().numpy()
        scalars.update(zip(computed, values))
    for name, v in scalars.items():
        out[name] = np.asarray(v, dtype=np.float64)
    return out
