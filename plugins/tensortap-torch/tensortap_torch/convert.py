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


_HEAVY = {  # reduction -> the full passes over the data it needs (each computed once)
    "min": ("minmax",), "max": ("minmax",), "mean": ("sum",), "sum": ("sum",), "std": ("sum", "sumsq"),
    "variance": ("sum", "sumsq"), "l2": ("sumsq",), "l1": ("l1",), "abs_mean": ("l1",),
    "abs_min": ("absminmax",), "abs_max": ("absminmax",), "nan_count": ("nan",), "inf_count": ("inf",),
    "zero_count": ("nonzero",),
}


def _passes(f: torch.Tensor, needed) -> Dict[str, float]:
    """The full passes over `f` as Python floats: a handful of torch calls, one host transfer."""
    parts: Dict[str, torch.Tensor] = {}
    for p in needed:
        if p == "minmax":
            parts["min"], parts["max"] = torch.aminmax(f)
        elif p == "absminmax":
            parts["abs_min"], parts["abs_max"] = torch.aminmax(f.abs())
        elif p == "sum":
            parts["sum"] = f.sum(dtype=torch.float64)
        elif p == "sumsq":
            parts["l2"] = torch.linalg.vector_norm(f, 2, dtype=torch.float64)
        elif p == "l1":
            parts["l1"] = torch.linalg.vector_norm(f, 1, dtype=torch.float64)
        elif p == "nan":
            parts["nan"] = torch.isnan(f).sum()
        elif p == "inf":
            parts["inf"] = torch.isinf(f).sum()
        elif p == "nonzero":
            parts["nonzero"] = torch.count_nonzero(f)
    if not parts:
        return {}
    values = torch.stack([v.double() for v in parts.values()]).tolist()
    return dict(zip(parts, values))


def reduce_torch(tensor: torch.Tensor, names: Iterable[str], bins: int = 64) -> Dict[str, np.ndarray]:
    """Every requested reduction of `tensor`, computed where it lives: one pass per kind of sum,
    no copy of float32/float64 data, one host transfer; the scalar arithmetic is then done in
    Python float64. Agrees with reduce_numpy (sums accumulate in float64, as numpy's do)."""
    names = list(names)
    t = plain(tensor)
    f = _work_tensor(t)
    n = f.numel()
    is_float = t.is_floating_point()
    needed = dict.fromkeys(p for r in names for p in _HEAVY.get(r, ())
                           if n or p in ("nan", "inf", "nonzero"))
    if not is_float:
        needed.pop("nan", None)
        needed.pop("inf", None)
    v = _passes(f, needed)
    out: Dict[str, np.ndarray] = {}
    var = None
    if n and ("std" in names or "variance" in names):
        mean = v["sum"] / n
        var = v["l2"] ** 2 / n - mean * mean
        if not var > 1e-6 * mean * mean:  # cancellation (tiny spread against the mean): centre first
            c = f.double() - mean
            var = float(torch.dot(c, c)) / n
        var = max(var, 0.0)
    nan = float("nan")
    for name in names:
        if name == "histogram":
            out[name] = _histogram(f, bins, _bin_dtype(t))
            continue
        if name == "nan_count":
            x = v.get("nan", 0.0)
        elif name == "inf_count":
            x = v.get("inf", 0.0)
        elif name == "zero_count":
            x = n - v["nonzero"] if n else 0.0
        elif n == 0:
            x = nan
        elif name in ("min", "max", "sum", "l1", "l2", "abs_min", "abs_max"):
            x = v[name]
        elif name == "mean":
            x = v["sum"] / n
        elif name == "abs_mean":
            x = v["l1"] / n
        elif name == "std":
            x = var ** 0.5
        elif name == "variance":
            x = var
        else:
            from tensortap.errors import ConfigError

            raise ConfigError(f"unknown reduction {name!r}")
        out[name] = np.asarray(x, dtype=np.float64)
    return out
