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


def _histogram(d: torch.Tensor, bins: int, edge_dtype: np.dtype) -> np.ndarray:
    finite = d[torch.isfinite(d)]
    if finite.numel() == 0:
        return np.concatenate([np.zeros(bins), np.linspace(0.0, 1.0, bins + 1)])
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1, dtype=edge_dtype).astype(np.float64)
    e = torch.from_numpy(edges).to(d.device)
    idx = (torch.bucketize(finite, e, right=True) - 1).clamp_(0, bins - 1)
    counts = torch.bincount(idx, minlength=bins)[:bins]
    return np.concatenate([counts.double().cpu().numpy(), edges])


def reduce_torch(tensor: torch.Tensor, names: Iterable[str], bins: int = 64) -> Dict[str, np.ndarray]:
    """Every requested reduction of `tensor`, computed where it lives; one host transfer."""
    t = plain(tensor)
    d = t.abs().double() if t.is_complex() else t.double()
    d = d.reshape(-1)
    n = d.numel()
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=d.device)
    out: Dict[str, np.ndarray] = {}
    scalars = {}
    is_float = t.is_floating_point()
    zero = torch.zeros((), dtype=torch.float64, device=d.device)
    for name in names:
        if name == "histogram":
            out[name] = _histogram(d, bins, _bin_dtype(t))
            continue
        if name == "nan_count":
            v = torch.isnan(d).sum().double() if is_float else zero
        elif name == "inf_count":
            v = torch.isinf(d).sum().double() if is_float else zero
        elif name == "zero_count":
            v = (n - torch.count_nonzero(d)).double() if n else zero
        elif n == 0:
            v = nan
        elif name == "min":
            v = d.min()
        elif name == "max":
            v = d.max()
        elif name == "mean":
            v = d.mean()
        elif name == "std":
            v = d.std(correction=0)
        elif name == "variance":
            v = d.var(correction=0)
        elif name == "sum":
            v = d.sum()
        elif name == "l1":
            v = d.abs().sum()
        elif name == "l2":
            v = torch.sqrt((d * d).sum())
        elif name == "abs_min":
            v = d.abs().min()
        elif name == "abs_max":
            v = d.abs().max()
        elif name == "abs_mean":
            v = d.abs().mean()
        else:
            from tensortap.errors import ConfigError

            raise ConfigError(f"unknown reduction {name!r}")
        scalars[name] = v
    if scalars:
        values = torch.stack(list(scalars.values())).cpu().numpy()
        for name, v in zip(scalars, values):
            out[name] = np.asarray(v, dtype=np.float64)
    return out
