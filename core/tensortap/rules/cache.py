"""A trial seen through a small value cache, for live evaluation: several rules evaluated on
the same step (and rules that look a few steps back) read each stored tensor once."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np


class CachedTrial:
    """Delegates everything to `trial`; `tensor(name).value(...)` results are cached (read-only)
    until `evict(before)` drops older steps or `max_bytes` is exceeded."""

    def __init__(self, trial, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._trial = trial
        self._values: Dict[Tuple, np.ndarray] = {}
        self._bytes = 0
        self.max_bytes = int(max_bytes)

    def __getattr__(self, name: str):
        return getattr(self._trial, name)

    def tensor(self, name: str) -> "_CachedTensor":
        return _CachedTensor(self, self._trial.tensor(name))

    def _value(self, t, step, mode, worker) -> np.ndarray:
        key = (t.name, int(step), mode, worker)
        v = self._values.get(key)
        if v is None:
            v = t.value(step, mode=mode, worker=worker)
            v.flags.writeable = False  # shared by every rule that reads it
            if self._bytes + v.nbytes > self.max_bytes:
                self._values.clear()
                self._bytes = 0
            if v.nbytes <= self.max_bytes:
                self._values[key] = v
                self._bytes += v.nbytes
        return v

    def evict(self, before: int) -> None:
        """Forget values of steps < `before`."""
        for k in [k for k in self._values if k[1] < before]:
            self._bytes -= self._values.pop(k).nbytes

    def __repr__(self) -> str:
        return f"<CachedTrial {self._trial!r}>"


class _CachedTensor:
    def __init__(self, owner: CachedTrial, tensor) -> None:
        self._owner, self._tensor = owner, tensor

    def __getattr__(self, name: str):
        return getattr(self._tensor, name)

    def value(self, step: int, mode=None, worker=None) -> np.ndarray:
        return self._owner._value(self._tensor, step, mode, worker)
