"""Rules over any tensors: all_zero, unchanged_tensor, tensor_variance, similar_across_runs."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ..base import Rule
from ..requirements import Need, Needs
from ._common import (ConfigError, any_nonzero, as_bool, as_list, check_mode, is_numeric, listing, mode_of,
                      result, surely_not_close, value)
from .gradients import nothing_selected, selection_needs, skipped

#: what all_zero / unchanged_tensor look at when given neither collection_names nor tensor_regex
PARAMETER_COLLECTIONS = ("weights", "gradients", "outputs")
PARAMETER_NEEDS = tuple(Need(c) for c in PARAMETER_COLLECTIONS)


def close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float, equal_nan: bool) -> bool:
    """np.allclose(a, b), with cheap first looks: one sampled element out of tolerance, or a
    largest difference beyond atol + rtol * max|b|, cannot be close, and a largest difference
    of 0 is (most tensors of a training run change every step)."""
    if a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    if surely_not_close([(a, b)], rtol, atol)[0]:
        return False
    if a.size:
        d = float(np.max(np.abs(a - b)))
        if d == 0.0:
            return True
        if d > atol + rtol * float(np.max(np.abs(b))):  # False when d is NaN: the exact test decides
            return False
    return bool(np.allclose(a, b, rtol, atol, equal_nan))


class AllZero(Rule):
    """Fires when at least `threshold` % of a tensor's values are exactly zero.

    Without collection_names / tensor_regex it checks collections weights, gradients and outputs
    (biases start at zero by design, so they are left out unless asked for)."""

    name = "all_zero"

    def __init__(self, collection_names=None, tensor_regex=None, threshold: float = 100.0) -> None:
        super().__init__()
        self.collection_names = as_list(collection_names)
        self.tensor_regex = as_list(tensor_regex)
        self.threshold = float(threshold)

    def requirements(self) -> Needs:
        return selection_needs(self.collection_names, self.tensor_regex, PARAMETER_NEEDS)

    def invoke_at_step(self, trial, step: int):
        names = self.select(trial, step, self.collection_names, self.tensor_regex, PARAMETER_COLLECTIONS)
        if not names:
            return nothing_selected(self, trial, step, self.tensor_regex)
        zeros = {}
        for n in names:
            v = value(trial, n, step)
            if v.size and is_numeric(v):
                if self.threshold >= 100.0 and any_nonzero(v):  # the common case, without counting
                    zeros[n] = float("nan")  # some value is non-zero; not counted
                    continue
                zeros[n] = float((v.size - np.count_nonzero(v)) * 100.0 / v.size)
        bad = {n: z for n, z in zeros.items() if z >= self.threshold}  # nan (not counted) is never >=
        if bad:
            return result(self, step, True, f"{len(bad)} tensors are >= {self.threshold:g}% zeros: "
                          f"{listing(bad, fmt='{:.1f}%')}", {"zero_percent": bad}, checked=len(zeros))
        if not zeros:
            return skipped(self, step, f"none of the {len(names)} tensors selected is a non-empty numeric array")
        return result(self, step, False, f"{len(zeros)} tensors below {self.threshold:g}% zeros", checked=len(zeros))


class UnchangedTensor(Rule):
    """Fires when a tensor is allclose(rtol, atol, equal_nan) at its last `num_steps` saved steps
    of `mode` (default "train": weights legitimately stay put during evaluation; None: any mode).

    Without collection_names / tensor_regex it checks weights, gradients and outputs."""

    name = "unchanged_tensor"

    def __init__(self, collection_names=None, tensor_regex=None, num_steps: int = 3, rtol: float = 1e-5,
                 atol: float = 1e-8, equal_nan: bool = False, mode: Optional[str] = "train") -> None:
        super().__init__()
        self.collection_names = as_list(collection_names)
        self.tensor_regex = as_list(tensor_regex)
        self.num_steps = int(num_steps)
        if self.num_steps < 2:
            raise ConfigError("unchanged_tensor: num_steps must be >= 2 (it compares that many saved steps)")
        self.rtol, self.atol, self.equal_nan = float(rtol), float(atol), as_bool(equal_nan)
        self.mode = check_mode(mode)
        self._steps: Dict[str, List[int]] = {}

    def requirements(self) -> Needs:
        return selection_needs(self.collection_names, self.tensor_regex, PARAMETER_NEEDS)

    def invoke_at_step(self, trial, step: int):
        if self.mode not in (None, "global") and mode_of(trial, step) != self.mode:
            return skipped(self, step, f"not a {self.mode} step")
        names = self.select(trial, step, self.collection_names, self.tensor_regex, PARAMETER_COLLECTIONS)
        if not names:
            return nothing_selected(self, trial, step, self.tensor_regex)
        same, pairs = {}, []
        for n in names:
            seen = self._steps.setdefault(n, [])
            seen.append(step)
            del seen[:-self.num_steps]
            if len(seen) >= self.num_steps:
                pairs.append((n, seen, value(trial, n, step)))
        # first one sampled look at each tensor against its oldest step, all in one pass: a
        # tensor that changed is usually told by it
        differ = surely_not_close([(value(trial, n, seen[0]), now) for n, seen, now in pairs], self.rtol, self.atol)
        for (n, seen, now), d in zip(pairs, differ):
            if not d and all(close(value(trial, n, s), now, self.rtol, self.atol, self.equal_nan) for s in seen[:-1]):
                same[n] = f"steps {seen[0]}..{seen[-1]}"
        if same:
            return result(self, step, True, f"{len(same)} tensors unchanged over their last {self.num_steps} saved "
                          f"steps: {listing(same)}", {"unchanged": same})
        if not pairs:
            return skipped(self, step, f"fewer than {self.num_steps} saved steps so far")
        return result(self, step, False, f"{len(pairs)} tensors changed")


class TensorVariance(Rule):
    """Fires when a tensor's variance is above `max_threshold` or below `min_threshold`.

    At least one threshold is required; without collection_names / tensor_regex every numeric
    tensor with more than one element is checked."""

    name = "tensor_variance"

    def __init__(self, collection_names=None, tensor_regex=None, max_threshold: Optional[float] = None,
                 min_threshold: Optional[float] = None) -> None:
        super().__init__()
        self.collection_names = as_list(collection_names)
        self.tensor_regex = as_list(tensor_regex)
        self.max_threshold = None if max_threshold in (None, "None", "") else float(max_threshold)
        self.min_threshold = None if min_threshold in (None, "None", "") else float(min_threshold)
        if self.max_threshold is None and self.min_threshold is None:
            raise ConfigError("tensor_variance needs max_threshold and/or min_threshold, "
                              "e.g. tt.rules.get('tensor_variance')(max_threshold=1e3, min_threshold=1e-6)")

    def requirements(self) -> Needs:
        return selection_needs(self.collection_names, self.tensor_regex)

    def invoke_at_step(self, trial, step: int):
        names = self.select(trial, step, self.collection_names, self.tensor_regex)
        if not names:
            return nothing_selected(self, trial, step, self.tensor_regex)
        var = {}
        for n in names:
            v = value(trial, n, step)
            if v.size > 1 and is_numeric(v):
                var[n] = float(np.var(v))
        hi = {n: x for n, x in var.items() if self.max_threshold is not None and x > self.max_threshold}
        lo = {n: x for n, x in var.items() if self.min_threshold is not None and x < self.min_threshold}
        if hi or lo:
            parts = ([f"variance above {self.max_threshold:g}: {listing(hi)}"] if hi else []) + \
                    ([f"variance below {self.min_threshold:g}: {listing(lo)}"] if lo else [])
            return result(self, step, True, "; ".join(parts), {"high": hi, "low": lo}, checked=len(var))
        if not var:
            return skipped(self, step, f"none of the {len(names)} tensors selected is a numeric array of more "
                           "than one element")
        return result(self, step, False, f"{len(var)} tensors within variance bounds", checked=len(var))


class SimilarAcrossRuns(Rule):
    """Fires when a tensor saved at the same step in this run and in `other_trial` (a path or a
    Trial) differs: not allclose(rtol, atol). A determinism check between two runs."""

    name = "similar_across_runs"

    def __init__(self, other_trial=None, collection_names=None, tensor_regex=None, rtol: float = 1e-5,
                 atol: float = 1e-8) -> None:
        super().__init__()
        if other_trial is None:
            raise ConfigError("similar_across_runs needs other_trial: the path of the run to compare with "
                              "(CLI: --param other_trial=runs/other)")
        self.other = other_trial
        self.collection_names = as_list(collection_names)
        self.tensor_regex = as_list(tensor_regex)
        self.rtol, self.atol = float(rtol), float(atol)

    def requirements(self) -> Needs:
        return selection_needs(self.collection_names, self.tensor_regex)

    def _other(self):
        if isinstance(self.other, (str, bytes)) or hasattr(self.other, "__fspath__"):
            from ...trial import create_trial

            self.other = create_trial(str(self.other))
        return self.other

    def invoke_at_step(self, trial, step: int):
        other = self._other()
        if step not in other.steps():
            other.refresh()
            if step not in other.steps():
                return skipped(self, step, f"step {step} not saved in {other.path}")
        theirs = set(other.tensor_names(step=step))
        mine = self.select(trial, step, self.collection_names, self.tensor_regex)
        names = [n for n in mine if n in theirs]
        if not names:
            if not mine:
                return nothing_selected(self, trial, step, self.tensor_regex)
            return skipped(self, step, f"none of the {len(mine)} tensors selected at this step is saved at "
                           f"step {step} of {other.path} (their names: trial.tensor_names(step={step}))")
        diff = {}
        for n in names:
            a, b = value(trial, n, step), value(other, n, step)
            if a.shape != b.shape:
                diff[n] = f"shape {a.shape} vs {b.shape}"
            elif is_numeric(a) and is_numeric(b):
                if not close(a, b, self.rtol, self.atol, True):
                    diff[n] = f"max |diff| {float(np.max(np.abs(a.astype(np.float64) - b))):.3g}"
            elif not np.array_equal(a, b):
                diff[n] = "values differ"
        if diff:
            return result(self, step, True, f"{len(diff)} of {len(names)} tensors differ from {other.path}: "
                          f"{listing(diff)}", {"differ": diff})
        return result(self, step, False, f"{len(names)} tensors match {other.path}")
