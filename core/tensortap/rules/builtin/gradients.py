"""Rules over gradients and weights: vanishing_gradient, exploding_tensor, weight_update_ratio,
poor_weight_initialization."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..base import Rule, RuleResult
from ..requirements import Need, Needs
from ._common import (activations, finite_of, l2_diff, mean_abs_of, no_match, norm_of, parameter_gradients, ConfigError,
                      as_bool, as_list, listing, mode_of, result, value)

#: the name-based selection of ReLU inputs, for runs that record no layer classes
RELU_INPUTS = r".*relu.*/input_\d+"


def skipped(rule: Rule, step: int, why: str) -> RuleResult:
    return rule.skip(step, why)


def selection_needs(collection_names, tensor_regex, default: Needs = ()) -> Needs:
    """What a rule taking collection_names / tensor_regex reads: the collections named; nothing
    known when a regex may pick anything; else `default`."""
    if tensor_regex:
        return ()
    if collection_names:
        return tuple(Need(c) for c in collection_names)
    return default


def nothing_selected(rule: Rule, trial, step: int, tensor_regex) -> RuleResult:
    """The skip of a rule whose selection (collections, or its tensor_regex) found nothing at `step`."""
    return rule.skip(step, no_match(tensor_regex) if tensor_regex else rule.nothing_to_check(trial, step))


class VanishingGradient(Rule):
    """Fires when the mean absolute value of a gradient falls below `threshold`.

    Reads the parameter gradients of collection "gradients" (gradients/<param>, not those of
    layer outputs); fires if any one of them is below."""

    name = "vanishing_gradient"
    collections = ("gradients",)
    needs = (Need("gradients"),)

    def __init__(self, threshold: float = 1e-7) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def invoke_at_step(self, trial, step: int):
        names = parameter_gradients(self.select(trial, step, default_collections=["gradients"]))
        if not names:
            return self.skip(step, self.nothing_to_check(trial, step))
        means = {}
        for n in names:
            means[n] = mean_abs_of(trial, n, step)
        low = {n: m for n, m in means.items() if m < self.threshold}
        if low:
            return result(self, step, True, f"mean |gradient| below {self.threshold:g} in {len(low)} of "
                          f"{len(names)} tensors: {listing(low)}", {"mean_abs": low, "threshold": self.threshold})
        smallest = min(means, key=lambda n: means[n])
        return result(self, step, False, f"smallest mean |gradient| {means[smallest]:.3g} ({smallest})",
                      {"min_mean_abs": means[smallest]})


class ExplodingTensor(Rule):
    """Fires when a tensor holds NaN (or, unless only_nan, +/-Inf) values.

    With neither collection_names nor tensor_regex it checks every numeric tensor saved at the step."""

    name = "exploding_tensor"

    def __init__(self, collection_names=None, tensor_regex=None, only_nan: bool = False) -> None:
        super().__init__()
        self.collection_names = as_list(collection_names)
        self.tensor_regex = as_list(tensor_regex)
        self.only_nan = as_bool(only_nan)

    def requirements(self) -> Needs:
        return selection_needs(self.collection_names, self.tensor_regex)

    def invoke_at_step(self, trial, step: int):
        names = self.select(trial, step, self.collection_names, self.tensor_regex)
        if not names:
            return nothing_selected(self, trial, step, self.tensor_regex)
        bad: Dict[str, str] = {}
        for n in names:
            if finite_of(trial, n, step):  # one fast pass (or a sum another rule made) clears a clean tensor
                continue
            v = value(trial, n, step)
            nan = int(np.isnan(v).sum())
            inf = 0 if self.only_nan else int(np.isinf(v).sum())
            if nan or inf:
                bad[n] = f"{nan} NaN" + (f", {inf} Inf" if inf else "") + f" of {v.size}"
        if bad:
            what = "NaN" if self.only_nan else "NaN/Inf"
            return result(self, step, True, f"{what} in {len(bad)} tensors: {listing(bad)}", {"tensors": bad})
        return result(self, step, False, f"{len(names)} tensors finite")


class WeightUpdateRatio(Rule):
    """Fires when |w_t - w_prev| / (|w_prev| + epsilon) of a weight tensor is above
    `large_threshold` or below `small_threshold` (L2 norms).

    Only TRAIN steps are compared (weights do not change during evaluation); w_prev is the
    latest saved TRAIN step at least `num_steps` train steps back (None: the previous one)."""

    name = "weight_update_ratio"
    collections = ("weights",)
    needs = (Need("weights"),)

    def __init__(self, num_steps: Optional[int] = None, large_threshold: float = 10.0,
                 small_threshold: float = 1e-8, epsilon: float = 1e-9) -> None:
        super().__init__()
        self.num_steps = None if num_steps in (None, "None", "none", "") else int(num_steps)
        self.large_threshold = float(large_threshold)
        self.small_threshold = float(small_threshold)
        self.epsilon = float(epsilon)
        if self.small_threshold >= self.large_threshold:
            raise ConfigError("weight_update_ratio: small_threshold must be below large_threshold")
        self._hist: Dict[str, List[tuple]] = {}  # name -> [(train step, global step)]

    def invoke_at_step(self, trial, step: int):
        if mode_of(trial, step) != "train":
            return skipped(self, step, "not a TRAIN step")
        ms = trial.mode_step(step)
        names = self.select(trial, step, default_collections=["weights"])
        if not names:
            return self.skip(step, self.nothing_to_check(trial, step))
        ratios, compared = {}, 0
        for n in names:
            hist = self._hist.setdefault(n, [])
            need = 1 if self.num_steps is None else self.num_steps
            prev = [g for (m, g) in hist if m <= ms - need]
            hist.append((ms, step))
            if prev:
                del hist[:max(0, len(prev) - 1)]
                w0, w1 = value(trial, n, prev[-1]), value(trial, n, step)
                ratios[n] = l2_diff(w1, w0) / (norm_of(trial, n, prev[-1], w0) + self.epsilon)
                compared += 1
        if not compared:
            return skipped(self, step, "no earlier TRAIN step to compare with yet")
        large = {n: r for n, r in ratios.items() if r > self.large_threshold}
        small = {n: r for n, r in ratios.items() if r < self.small_threshold}
        if large or small:
            parts = []
            if large:
                parts.append(f"update/weight ratio above {self.large_threshold:g}: {listing(large)}")
            if small:
                parts.append(f"update/weight ratio below {self.small_threshold:g}: {listing(small)}")
            return result(self, step, True, "; ".join(parts), {"large": large, "small": small})
        return result(self, step, False, f"update/weight ratios in range for {compared} tensors",
                      {"min": min(ratios.values()), "max": max(ratios.values())})


class PoorWeightInitialization(Rule):
    """Within the first `steps` TRAIN steps, fires when (a) the variance of activation inputs
    differs across layers by more than a factor `threshold`, (b) the 5th-95th percentile spread
    of a gradient is below `distribution_range`, or (c) the loss made no new minimum for
    `patience` consecutive steps.

    Activation inputs: the inputs of ReLU layers (found by the layer classes the run records, or
    by names matching ".*relu.*/input_N" where it records none); activation_inputs_regex overrides."""

    name = "poor_weight_initialization"
    needs = (Need("inputs", ("relu",)), Need("gradients"), Need("losses"))

    def __init__(self, activation_inputs_regex: Optional[str] = None, threshold: float = 10.0,
                 distribution_range: float = 0.001, patience: int = 5, steps: int = 10) -> None:
        super().__init__()
        self.activation_inputs_regex = as_list(activation_inputs_regex)
        self.threshold = float(threshold)
        self.distribution_range = float(distribution_range)
        self.patience = int(patience)
        self.steps_ = int(steps)
        self._best: Dict[str, tuple] = {}  # loss name -> (best value, steps since it)

    def requirements(self) -> Needs:
        return () if self.activation_inputs_regex else self.needs

    def invoke_at_step(self, trial, step: int):
        if mode_of(trial, step) != "train":
            return skipped(self, step, "not a TRAIN step")
        ms = trial.mode_step(step)
        if ms >= self.steps_:
            return skipped(self, step, f"past the first {self.steps_} train steps")
        why: List[str] = []
        vals: Dict[str, Any] = {}
        if self.activation_inputs_regex:
            acts = activations(trial.tensor_names(regex=self.activation_inputs_regex, step=step))
        else:
            acts = self.select_layers(trial, step, "relu", "input", name_regex=RELU_INPUTS)
        var = {n: float(np.var(value(trial, n, step))) for n in acts}
        if len(var) >= 2:
            hi, lo = max(var.values()), min(var.values())
            ratio = hi / lo if lo > 0 else float("inf")
            vals["activation_variance_ratio"] = ratio
            if ratio > self.threshold:
                why.append(f"activation-input variance differs {ratio:.3g}x across layers (> {self.threshold:g}): "
                           f"{listing(var)}")
        spreads = {}
        for n in parameter_gradients(trial.tensor_names(collection="gradients", step=step)):
            g = value(trial, n, step)
            if g.size >= 2:
                p5, p95 = np.percentile(g, [5, 95])
                spreads[n] = float(p95 - p5)
        narrow = {n: s for n, s in spreads.items() if s < self.distribution_range}
        if narrow:
            vals["narrow_gradients"] = narrow
            why.append(f"gradient 5-95 percentile spread below {self.distribution_range:g}: {listing(narrow)}")
        losses = trial.tensor_names(collection="losses", step=step)
        for n in losses:
            loss = float(np.mean(value(trial, n, step)))
            best, since = self._best.get(n, (float("inf"), -1))
            best, since = (loss, 0) if loss < best else (best, since + 1)
            self._best[n] = (best, since)
            if since >= self.patience:
                vals.setdefault("flat_losses", {})[n] = loss
                why.append(f"loss {n} made no new minimum in {since} steps (best {best:.4g})")
        if why:
            return result(self, step, True, "; ".join(why), vals)
        return result(self, step, False, f"initialisation looks fine ({len(var)} activation inputs, "
                      f"{len(spreads)} gradients, {len(losses)} losses checked)", vals)
