"""Turning captured values into store items: numpy copies of raw values, and the scalar
reductions of many tensors computed by their adapter in one `reduce_many` call per group."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..reductions import reduce_numpy_packed
from ..store import TensorItem
from ..store.index import is_storable

if TYPE_CHECKING:  # pragma: no cover
    from ..adapter import Adapter

_storable = functools.lru_cache(maxsize=None)(is_storable)  # per dtype: checked on every capture

#: values that are numpy already (or become numpy without a framework)
NUMPY_LIKE = (np.ndarray, np.generic, int, float, bool, complex, list, tuple)


def numpy_copy(adapter: Optional["Adapter"], value: Any, name: str) -> np.ndarray[Any, Any]:
    """A C-contiguous numpy copy of `value` that tensortap owns, made by its framework's adapter
    (None: numpy); a ConfigError for a dtype the store cannot hold."""
    arr = adapter.to_numpy(value) if adapter is not None else np.array(value, copy=True)
    if not isinstance(arr, np.ndarray):
        arr = np.array(arr, copy=True)
    if not _storable(arr.dtype):
        raise ConfigError(
            f"cannot save {name!r}: dtype {arr.dtype} (only bool, int, float incl. bfloat16/float8, complex "
            "and fixed-width strings are stored; convert objects first, e.g. np.asarray(x, dtype=str))"
        )
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


@dataclass
class ReductionGroup:
    """Tensors of one adapter whose plans ask for the same scalar reductions with the same bins:
    reduced in one `Adapter.reduce_many` call (numpy's when no adapter owns them)."""

    adapter: Optional["Adapter"]
    reductions: Tuple[str, ...]
    bins: int
    kind: str
    names: List[Tuple[str, Tuple[str, ...]]] = field(default_factory=list)  # (tensor name, its collections)
    tensors: List[Any] = field(default_factory=list)

    def add(self, name: str, collections: Tuple[str, ...], tensor: Any) -> None:
        self.names.append((name, collections))
        self.tensors.append(tensor)

    def reduce(self) -> List[TensorItem]:
        """One item per tensor: its packed reductions (or a Deferred handle giving them later)."""
        if self.adapter is not None:
            values = self.adapter.reduce_many(self.tensors, self.reductions, self.bins)
        else:
            values = [reduce_numpy_packed(numpy_copy(None, t, n), self.reductions, self.bins)
                      for (n, _), t in zip(self.names, self.tensors)]
        return [TensorItem(name, self.kind, cnames, v) for (name, cnames), v in zip(self.names, values)]
