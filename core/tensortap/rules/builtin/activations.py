"""Rules over layer activations: dead_relu, saturated_activation."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np

from ..base import Rule
from ..requirements import Need, Needs
from ._common import activations, as_float_pair, as_list, listing, no_match, result, value


def inactive_units(active: np.ndarray, threshold_inactivity: float) -> float:
    """% of units (every element but the batch axis) active in < threshold_inactivity % of samples."""
    if active.ndim == 0:
        active = active.reshape(1, 1)
    per_unit = active.reshape(active.shape[0], -1).mean(axis=0) * 100.0
    return float((per_unit < threshold_inactivity).mean() * 100.0) if per_unit.size else 0.0


class _PerLayerPercent(Rule):
    """Shared shape of the activation rules: a percentage per layer of `kinds`, fired when any
    layer's exceeds `threshold_layer`. Layers are found by the layer classes the run records
    (their `io` tensors), plus, for layers it has no class for, by names matching `name_regex`;
    a user's tensor_regex replaces both. A subclass sets `what`, `kinds`, `io`, `name_regex` and
    defines `percent(x, name, kind) -> float` for one layer's array (kind: the layer's recorded
    kind, or None)."""

    tensor_regex: Optional[list]
    threshold_layer: float

    #: the percentage for one layer's array: (x, name, kind) -> float, defined by each subclass
    percent: Callable[[np.ndarray, str, Optional[str]], float]
    what = ""  # e.g. "dead": the words in messages and the key of the reported values
    kinds: Tuple[str, ...] = ()
    io = "output"
    name_regex = ""

    def requirements(self) -> Needs:
        return () if self.tensor_regex else self.needs

    def names(self, trial, step: int) -> List[str]:
        if self.tensor_regex:
            return activations(trial.tensor_names(regex=self.tensor_regex, step=step))
        return self.select_layers(trial, step, self.kinds, self.io, name_regex=self.name_regex)

    def invoke_at_step(self, trial, step: int):
        names = self.names(trial, step)
        if not names:
            return self.skip(step, no_match(self.tensor_regex) if self.tensor_regex
                             else self.nothing_to_check(trial, step))
        per_layer = {n: self.percent(value(trial, n, step), n, trial.layer_kind(n)) for n in names}
        bad = {n: p for n, p in per_layer.items() if p > self.threshold_layer}
        values = {f"{self.what}_percent": per_layer}
        if bad:
            return result(self, step, True, f"{len(bad)} layers have more than {self.threshold_layer:g}% "
                          f"{self.what} units{self.detail()}: {listing(bad, fmt='{:.1f}%')}", values)
        return result(self, step, False, f"{self.what} units per layer: " + listing(per_layer, fmt="{:.1f}%"), values)

    def detail(self) -> str:
        return ""


class DeadRelu(_PerLayerPercent):
    """Fires when, in a ReLU layer's output, more than `threshold_layer` % of units are active
    (> 0) in fewer than `threshold_inactivity` % of the batch's samples.

    A unit is one element of a sample (a neuron, or a channel at one position in a feature map);
    axis 0 is the batch. ReLU layers: by the layer classes the run records (nn.ReLU, Keras ReLU /
    Activation("relu") / Dense(activation="relu"), Gluon Activation("relu")), or by names matching
    ".*relu.*/output_N" where it records none; tensor_regex replaces both."""

    name = "dead_relu"
    collections = ("outputs",)
    needs = (Need("outputs", ("relu",)),)
    kinds = ("relu",)
    io = "output"
    name_regex = r".*relu.*/output_\d+"

    def __init__(self, tensor_regex: Optional[str] = None, threshold_inactivity: float = 1.0,
                 threshold_layer: float = 50.0) -> None:
        super().__init__()
        self.tensor_regex = as_list(tensor_regex)
        self.threshold_inactivity = float(threshold_inactivity)
        self.threshold_layer = float(threshold_layer)

    what = "dead"

    def percent(self, x: np.ndarray, name: str, kind: Optional[str]) -> float:
        return inactive_units(x > 0, self.threshold_inactivity)

    def detail(self) -> str:
        return f" (active in < {self.threshold_inactivity:g}% of samples)"


class SaturatedActivation(_PerLayerPercent):
    """Fires when, in a tanh or sigmoid layer's input, more than `threshold_layer` % of units lie
    outside the non-saturated range in more than (100 - `threshold_inactivity`) % of samples.

    The range is (threshold_tanh_min, threshold_tanh_max) for tanh layers,
    (threshold_sigmoid_min, threshold_sigmoid_max) for sigmoid ones: where float32 tanh/sigmoid are
    flat to within their precision. Layers: by the layer classes the run records, or by names
    containing "tanh" / "sigmoid" where it records none; tensor_regex replaces both. The input of
    an activation fused into a layer (Keras Dense(activation="tanh")) is never captured."""

    name = "saturated_activation"
    collections = ("inputs",)
    needs = (Need("inputs", ("tanh", "sigmoid")),)
    kinds = ("tanh", "sigmoid")
    io = "input"
    name_regex = r".*tanh.*/input_\d+|.*sigmoid.*/input_\d+"

    def __init__(self, tensor_regex: Optional[str] = None,
                 threshold_tanh_min: float = -9.4999, threshold_tanh_max: float = 9.4999,
                 threshold_sigmoid_min: float = -23.0, threshold_sigmoid_max: float = 16.99999,
                 threshold_inactivity: float = 1.0, threshold_layer: float = 50.0) -> None:
        super().__init__()
        self.tensor_regex = as_list(tensor_regex)
        self.tanh = as_float_pair([threshold_tanh_min, threshold_tanh_max], "threshold_tanh_min/max")
        self.sigmoid = as_float_pair([threshold_sigmoid_min, threshold_sigmoid_max], "threshold_sigmoid_min/max")
        self.threshold_inactivity = float(threshold_inactivity)
        self.threshold_layer = float(threshold_layer)

    what = "saturated"

    def percent(self, x: np.ndarray, name: str, kind: Optional[str]) -> float:
        low = name.lower()
        sigmoid = kind == "sigmoid" if kind in self.kinds else ("sigmoid" in low and "tanh" not in low)
        lo, hi = self.sigmoid if sigmoid else self.tanh
        return inactive_units((x > lo) & (x < hi), self.threshold_inactivity)
