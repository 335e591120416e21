"""Scalar series kept per run and read incrementally (only steps not read before), and the
min/max downsampling that keeps a 10,000-step line to a few hundred points without losing spikes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ..vis.scalars import MODES, _point

_MODE_CODE = {m: i for i, m in enumerate(MODES)}


@dataclass
class Series:
    """One scalar over steps: the step, its value (averaged to one number) and its mode."""

    steps: np.ndarray  # int64, sorted
    values: np.ndarray  # float64
    modes: np.ndarray  # int8 index into vis.scalars.MODES

    @staticmethod
    def empty() -> "Series":
        return Series(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int8))

    def by_mode(self) -> Dict[str, "Series"]:
        out = {}
        for code in np.unique(self.modes).tolist():
            m = self.modes == code
            out[MODES[code]] = Series(self.steps[m], self.values[m], self.modes[m])
        return out

    def at(self, steps: np.ndarray) -> np.ndarray:
        """Values at `steps` (NaN where this series has no point)."""
        i = np.searchsorted(self.steps, steps)
        i = np.minimum(i, max(len(self.steps) - 1, 0))
        hit = (self.steps[i] == steps) if len(self.steps) else np.zeros(len(steps), bool)
        out = np.full(len(steps), np.nan)
        out[hit] = self.values[i[hit]]
        return out


class TensorSteps:
    """The steps each tensor asked about was saved at (a value or a reduction), kept up to date by
    looking only at the steps not seen before (and the newest two, which a step written in parts
    may still extend): `Tensor.steps()` walks every step of a 10,000-step run each time."""

    #: tensors followed besides the scalars (the tensor browser's recent choices)
    MAX_TRACKED = 64

    def __init__(self) -> None:
        self._seen: set = set()
        self._of: Dict[str, set] = {}
        self._ver: Optional[tuple] = None

    def _update(self, trial) -> None:
        if trial.version == self._ver:
            return
        self._ver = trial.version
        every = trial.steps()
        new = [s for s in every if s not in self._seen]
        if self._of:
            for s in set(new) | set(every[-2:]):
                at = set(trial.tensor_names(step=s))
                for name, have in self._of.items():
                    if name in at:
                        have.add(s)
        self._seen.update(new)

    def get(self, trial, name: str) -> np.ndarray:
        """Sorted steps of tensor `name`."""
        self._update(trial)
        have = self._of.pop(name, None)
        if have is None:
            have = set(trial.tensor(name).steps())  # once: then only new steps are looked at
        self._of[name] = have  # most recently asked last
        while len(self._of) > self.MAX_TRACKED:
            self._of.pop(next(iter(self._of)))
        return np.fromiter(sorted(have), np.int64, len(have))


class SeriesCache:
    """name -> Series of one trial, extended by reading only the steps it has not read yet.
    Call with the run's lock held (a Trial is not shared between threads otherwise)."""

    def __init__(self, steps: Optional[TensorSteps] = None) -> None:
        self._series: Dict[str, Series] = {}
        self._version: Dict[str, tuple] = {}
        self.steps = steps if steps is not None else TensorSteps()

    def get(self, trial, name: str) -> Series:
        ver = trial.version
        have = self._series.get(name)
        if have is not None and self._version.get(name) == ver:
            return have
        have = have if have is not None else Series.empty()
        t = trial.tensor(name)
        steps = self.steps.get(trial, name)
        new = np.setdiff1d(steps, have.steps, assume_unique=True)
        if new.size:
            vals, modes, kept = [], [], []
            for s in new.tolist():
                v = _point(t, s)
                if v is None:
                    continue  # unreadable there: tried again when the run changes
                m = trial.mode(s)
                kept.append(s)
                vals.append(v)
                modes.append(_MODE_CODE.get(m.value.lower() if m is not None else "global", _MODE_CODE["global"]))
            if kept:
                st = np.concatenate([have.steps, np.asarray(kept, np.int64)])
                order = np.argsort(st, kind="stable")
                have = Series(st[order], np.concatenate([have.values, np.asarray(vals, np.float64)])[order],
                              np.concatenate([have.modes, np.asarray(modes, np.int8)])[order])
        self._series[name] = have
        self._version[name] = ver
        return have


def minmax_indices(y: np.ndarray, points: int) -> np.ndarray:
    """Indices of at most `points` samples of `y` that keep each bucket's minimum and maximum
    (so a one-step spike survives), the first and the last, in order."""
    n = len(y)
    if n <= points:
        return np.arange(n)
    buckets = max(1, (points - 2) // 2)
    size = -(-n // buckets)  # equal buckets (the last padded), so one reduction finds them all
    pad = buckets * size - n
    f = np.asarray(y, np.float64)
    lo = np.concatenate([np.where(np.isnan(f), np.inf, f), np.full(pad, np.inf)]).reshape(buckets, size)
    hi = np.concatenate([np.where(np.isnan(f), -np.inf, f), np.full(pad, -np.inf)]).reshape(buckets, size)
    base = np.arange(buckets) * size
    keep = np.concatenate([[0, n - 1], base + lo.argmin(axis=1), base + hi.argmax(axis=1)])
    return np.unique(keep[keep < n])


def window(series: Series, lo: Optional[int], hi: Optional[int], points: int) -> Tuple[np.ndarray, np.ndarray, int]:
    """(steps, values, points in the window before downsampling) of `series` within [lo, hi]."""
    a = 0 if lo is None else int(np.searchsorted(series.steps, lo, side="left"))
    b = len(series.steps) if hi is None else int(np.searchsorted(series.steps, hi, side="right"))
    x, y = series.steps[a:b], series.values[a:b]
    idx = minmax_indices(y, points)
    return x[idx], y[idx], b - a
