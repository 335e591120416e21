"""A trial seen through a small value cache, for rule evaluation (the Evaluator, live and
offline): several rules evaluated on the same step (and rules that look a few steps back) read
each stored tensor once, and the tensors the rules read at one saved step are read together at
the next (one request for neighbouring records instead of one each)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class CachedTrial:
    """Delegates everything to `trial`; `tensor(name).value(...)` results are cached (read-only)
    until `evict(before)` drops older steps or `max_bytes` is exceeded."""

    def __init__(self, trial, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._trial = trial
        self._values: dict[tuple, np.ndarray] = {}
        self._bytes = 0
        self.max_bytes = int(max_bytes)
        self._wanted: dict[int, set[str]] = {}  # step -> names whose value (any mode/worker) was asked for
        self._stats: dict[tuple[str, int, str], float] = {}  # (name, step, what) -> a statistic of the value
        self._seen: set[str] | None = None  # names read in the innermost open reading() scope

    def __getattr__(self, name: str):
        return getattr(self._trial, name)

    def reading(self) -> Reading:
        """`with view.reading() as seen:` collects the names of the tensors whose values,
        reductions or statistics are read through this view inside the block (what a rule
        evaluation checked); scopes nest (an outer one sees what an inner one read)."""
        return Reading(self)

    def note(self, name: str) -> None:
        """Count `name` as read by the open reading() scope."""
        seen = self._seen
        if seen is not None:
            seen.add(name)

    def values_at(self, names: Iterable[str], step: int, mode=None, worker=None) -> dict[str, np.ndarray]:
        got = self._trial.values_at(names, step, mode=mode, worker=worker)
        for n in got:
            self.note(n)
        return got

    def tensor(self, name: str) -> _CachedTensor:
        return _CachedTensor(self, self._trial.tensor(name))

    def _keep(self, key: tuple, v: np.ndarray) -> None:
        v.flags.writeable = False  # shared by every rule that reads it
        if self._bytes + v.nbytes > self.max_bytes:
            self._values.clear()
            self._bytes = 0
        if v.nbytes <= self.max_bytes:
            self._values[key] = v
            self._bytes += v.nbytes

    def _value(self, t, step, mode, worker) -> np.ndarray:
        key = (t.name, int(step), mode, worker)
        seen = self._seen
        if seen is not None:
            seen.add(t.name)
        if mode is None and worker is None:
            self._wanted.setdefault(key[1], set()).add(t.name)
        v = self._values.get(key)
        if v is None:
            v = t.value(step, mode=mode, worker=worker)
            self._keep(key, v)
        return v

    def value(self, name: str, step: int) -> np.ndarray:
        """trial.tensor(name).value(step), without making the tensor objects when cached."""
        key = (name, step, None, None)
        v = self._values.get(key)
        if v is None:
            return self.tensor(name).value(step)
        seen = self._seen
        if seen is not None:
            seen.add(name)
        want = self._wanted.get(step)
        if want is None:
            want = self._wanted[step] = set()
        want.add(name)
        return v

    def stat(self, name: str, step: int, what: str) -> float | None:
        """A statistic of a value ("l2", "mean_abs") a rule computed already, or None."""
        self.note(name)
        return self._stats.get((name, step, what))

    def keep_stat(self, name: str, step: int, what: str, x: float) -> None:
        """Remember a statistic of the value of `name` at `step`, for the other rules."""
        self._stats[(name, step, what)] = x

    def wanted(self, step: int) -> set[str]:
        """Names whose value at `step` was read through this cache (a rule set reads the same
        names at every step: what to prefetch at the next one)."""
        return set(self._wanted.get(int(step), ()))

    def prefetch(self, step: int, names: Iterable[str]) -> None:
        """Read the values of `names` at `step` together (Trial.values_at) into the cache; those
        that cannot be read are left for value() to raise about."""
        step = int(step)
        todo = [n for n in names if (n, step, None, None) not in self._values]
        if not todo:
            return
        for n, v in self._trial.values_at(todo, step).items():
            self._keep((n, step, None, None), v)

    def evict(self, before: int) -> None:
        """Forget values of steps < `before`."""
        for k in [k for k in self._values if k[1] < before]:
            self._bytes -= self._values.pop(k).nbytes
        for s in [s for s in self._wanted if s < before]:
            del self._wanted[s]
        for k in [k for k in self._stats if k[1] < before]:
            del self._stats[k]

    def __repr__(self) -> str:
        return f"<CachedTrial {self._trial!r}>"


class Reading:
    """The context CachedTrial.reading() returns: while open, the view adds the names read to `seen`."""

    __slots__ = ("outer", "owner", "seen")

    def __init__(self, owner: CachedTrial) -> None:
        self.owner = owner
        self.seen: set[str] = set()
        self.outer: set[str] | None = None

    def __enter__(self) -> set[str]:
        self.outer, self.owner._seen = self.owner._seen, self.seen
        return self.seen

    def __exit__(self, *exc) -> None:
        self.owner._seen = self.outer
        if self.outer is not None:
            self.outer.update(self.seen)


class _CachedTensor:
    def __init__(self, owner: CachedTrial, tensor) -> None:
        self._owner, self._tensor = owner, tensor

    def __getattr__(self, name: str):
        return getattr(self._tensor, name)

    def value(self, step: int, mode=None, worker=None) -> np.ndarray:
        return self._owner._value(self._tensor, step, mode, worker)

    def values(self, mode=None, worker=None) -> dict[int, np.ndarray]:
        self._owner.note(self._tensor.name)
        return self._tensor.values(mode=mode, worker=worker)

    def reduction_value(self, step: int, name: str, mode=None, worker=None, abs: bool = False):
        self._owner.note(self._tensor.name)
        return self._tensor.reduction_value(step, name, mode=mode, worker=worker, abs=abs)

    def reduction_values(self, step: int, mode=None, worker=None) -> dict[str, object]:
        self._owner.note(self._tensor.name)
        return self._tensor.reduction_values(step, mode=mode, worker=worker)
