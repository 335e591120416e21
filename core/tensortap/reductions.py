"""ReductionConfig and the numpy reference implementation of every reduction.

A framework adapter may compute the same reductions on the tensor's own device; the values
must agree with `reduce_numpy`, which the conformance suite checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np

from . import plugins
from .errors import ConfigError, did_you_mean

REDUCTIONS = (
    "min", "max", "mean", "std", "variance", "sum", "l1", "l2",
    "abs_min", "abs_max", "abs_mean", "nan_count", "inf_count", "zero_count", "histogram",
)


@dataclass(frozen=True)
class ReductionConfig:
    """Save summaries instead of (or beside) full tensors.

    `tt.ReductionConfig(reductions=["mean", "std", "l2", "histogram"], histogram_bins=64)`;
    `save_raw_tensor=True` keeps the full tensor as well.
    """

    reductions: Tuple[str, ...] = ("min", "max", "mean", "std", "l2")
    histogram_bins: int = 64
    save_raw_tensor: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.reductions, str):
            raise ConfigError(
                f"reductions must be a list of names, got the string {self.reductions!r}; "
                f"write reductions=[{self.reductions!r}]"
            )
        names = tuple(self.reductions)
        for r in names:
            if r not in REDUCTIONS and _vector_reduction(r) is None:
                known = REDUCTIONS + tuple(sorted(_vector_names()))
                raise ConfigError(
                    f"unknown reduction {r!r}." + did_you_mean(r, known)
                    + f" Known reductions: {', '.join(known)} (plugins add more: `tensortap plugins`)"
                )
        object.__setattr__(self, "reductions", names)
        if not isinstance(self.histogram_bins, int) or self.histogram_bins < 1:
            raise ConfigError(f"histogram_bins must be a positive int, got {self.histogram_bins!r}")


def _vector_reduction(name: str):
    """The plugin-registered VectorReduction `name`, or None (loads the plugins on first use)."""
    return plugins.get_registry().reductions.get(name)


def _vector_names() -> Tuple[str, ...]:
    return tuple(plugins.get_registry().reductions)


def split_reductions(names: Iterable[str]) -> Tuple[Tuple[str, ...], tuple]:
    """(the built-in reductions among `names`, in canonical order; the plugin-registered
    VectorReductions among them, in the order first named)."""
    names = list(names)
    vectors = tuple(v for v in (_vector_reduction(n) for n in dict.fromkeys(n for n in names if n not in _ORDER))
                    if v is not None)
    return canonical(n for n in names if n in _ORDER), vectors


def _as_float(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "c":
        return np.abs(a).astype(np.float64)
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    if a.dtype.kind == "V":  # ml_dtypes bfloat16/float8: exact in float32
        return a.astype(np.float32)
    return a


def histogram(a: np.ndarray, bins: int) -> np.ndarray:
    """Counts then edges in one float64 array of length 2*bins+1 (finite values only)."""
    a = _as_float(np.asarray(a)).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        counts, edges = np.zeros(bins), np.linspace(0.0, 1.0, bins + 1)
    else:
        lo, hi = float(a.min()), float(a.max())
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(a, bins=bins, range=(lo, hi))
    return np.concatenate([counts.astype(np.float64), edges.astype(np.float64)])


def split_histogram(packed: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inverse of `histogram`: (counts, edges)."""
    bins = (len(packed) - 1) // 2
    return packed[:bins], packed[bins:]


def reduce_numpy(a: np.ndarray, names: Iterable[str], bins: int = 64) -> Dict[str, np.ndarray]:
    """Every requested reduction of `a` as a numpy scalar/array (float64). NaNs propagate
    except in nan_count/inf_count/histogram; an empty tensor gives NaN for value reductions."""
    a = np.asarray(a)
    f = _as_float(a)
    out: Dict[str, np.ndarray] = {}
    empty = f.size == 0
    v: Union[float, np.generic]
    for name in names:
        if name == "histogram":
            out[name] = histogram(f, bins)
            continue
        if name == "nan_count":
            v = np.count_nonzero(np.isnan(f)) if f.dtype.kind == "f" else 0
        elif name == "inf_count":
            v = np.count_nonzero(np.isinf(f)) if f.dtype.kind == "f" else 0
        elif name == "zero_count":
            v = f.size - np.count_nonzero(f)
        elif empty:
            v = np.nan
        elif name == "min":
            v = f.min()
        elif name == "max":
            v = f.max()
        elif name == "mean":
            v = f.mean(dtype=np.float64)
        elif name == "std":
            v = f.std(dtype=np.float64)
        elif name == "variance":
            v = f.var(dtype=np.float64)
        elif name == "sum":
            v = f.sum(dtype=np.float64)
        elif name == "l1":
            v = np.abs(f).sum(dtype=np.float64)
        elif name == "l2":
            v = np.sqrt(np.square(f, dtype=np.float64).sum())
        elif name == "abs_min":
            v = np.abs(f).min()
        elif name == "abs_max":
            v = np.abs(f).max()
        elif name == "abs_mean":
            v = np.abs(f).mean(dtype=np.float64)
        else:  # guarded by ReductionConfig
            raise ConfigError(f"unknown reduction {name!r}")
        out[name] = np.asarray(v, dtype=np.float64)
    return out


# ---- packed records: every reduction of one tensor at one step in ONE float64 vector ----------
#: Record kind prefix of a packed reduction vector: "reductions:min,max,mean,std,l2". Runs written
#: before packing hold one record per reduction, kind "reduction:<name>"; readers take both.
PACKED_PREFIX = "reductions:"
_ORDER = {r: i for i, r in enumerate(REDUCTIONS)}


def canonical(names: Iterable[str]) -> Tuple[str, ...]:
    """The reductions `names` without duplicates, in the order packed vectors hold them
    (REDUCTIONS order: scalars first, "histogram" last)."""
    return tuple(sorted(set(names), key=_ORDER.__getitem__))


def packed_kind(names: Tuple[str, ...]) -> str:
    """Record kind of a packed vector holding the canonical reductions `names`."""
    return PACKED_PREFIX + ",".join(names)


@lru_cache(maxsize=1024)
def parse_packed(kind: str) -> Optional[Tuple[str, ...]]:
    """The reductions a packed record of kind `kind` holds, in vector order; None for other kinds."""
    if not kind.startswith(PACKED_PREFIX):
        return None
    return tuple(n for n in kind[len(PACKED_PREFIX):].split(",") if n)


def pack(values: Dict[str, np.ndarray], names: Tuple[str, ...]) -> np.ndarray:
    """One float64 vector: the scalars of canonical `names` in order, then the histogram's
    counts and edges (2*bins+1 values) when "histogram" is among them."""
    scal = [float(values[n]) for n in names if n != "histogram"]
    if names and names[-1] == "histogram":
        return np.concatenate([np.asarray(scal, dtype=np.float64), np.asarray(values["histogram"], dtype=np.float64)])
    return np.asarray(scal, dtype=np.float64)


def unpack(vec: np.ndarray, names: Tuple[str, ...], name: str) -> Union[float, Tuple[np.ndarray, np.ndarray]]:
    """Reduction `name` from a packed vector: a float, or (counts, edges) for "histogram"."""
    if name == "histogram":
        return split_histogram(np.asarray(vec[len(names) - 1:], dtype=np.float64))
    return float(vec[names.index(name)])


def reduce_numpy_packed(a: np.ndarray, names: Tuple[str, ...], bins: int = 64) -> np.ndarray:
    """`reduce_numpy` packed into one vector (canonical `names`)."""
    return pack(reduce_numpy(a, names, bins), names)
