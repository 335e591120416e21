"""The contract a framework plugin's conformance kit fulfils (see tests/conformance/).

Every kit builds the same model, fc1: Linear(8, 16) -> ReLU -> fc2: Linear(16, 4), trains it
with plain SGD on the same batches, and reports what the parameters and gradients were at
each step, taken by the kit itself (not through tensortap). The suite then checks names,
steps and bit-exact values of what the Hook stored.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .numpy_mlp import NumpyMLP, make_data

N_IN, N_HIDDEN, N_OUT = 8, 16, 4


def batches(n_steps: int = 10, batch: int = 5, seed: int = 3) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The shared training data: n_steps (x float32 (batch, 8), y int64 (batch,)) pairs."""
    x, y = make_data(n_steps * batch, N_IN, N_OUT, seed)
    return [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(n_steps)]


class ConformanceKit:
    """Subclass per framework. `requires` lists modules that must import, else the suite skips."""

    framework: str = ""
    requires: Sequence[str] = ()

    def available(self) -> Tuple[bool, str]:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        return (not missing, f"{self.framework}: not installed ({', '.join(missing)})" if missing else "")

    def param_names(self) -> Dict[str, str]:
        """canonical name ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias") -> framework name."""
        raise NotImplementedError

    def output_name(self, layer: str) -> str:
        """Tensor name of a layer's output ("fc1" or "fc2")."""
        raise NotImplementedError

    def make_model(self, seed: int = 0) -> Any:
        raise NotImplementedError

    def train(self, hook, model: Any, data: List[Tuple[np.ndarray, np.ndarray]], lr: float = 0.1) -> List[dict]:
        """Register `hook` on `model` (however the framework does it), train one step per batch,
        and return per step {"params": {fw_name: array used by the forward}, "grads": {fw_name: array},
        "loss": float} captured independently of tensortap."""
        raise NotImplementedError


class NumpyKit(ConformanceKit):
    framework = "numpy"

    def param_names(self) -> Dict[str, str]:
        return {k: k for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}

    def output_name(self, layer: str) -> str:
        return f"{layer}/output_0"

    def make_model(self, seed: int = 0) -> NumpyMLP:
        return NumpyMLP(N_IN, N_HIDDEN, N_OUT, seed=seed)

    def train(self, hook, model: NumpyMLP, data, lr: float = 0.1) -> List[dict]:
        hook.register(model)
        hook.register_loss(model)
        snaps = []
        for x, y in data:
            params = {k: v.copy() for k, v in model.params.items()}
            out = model.forward(x)
            loss = model.loss(out, y)
            model.backward()
            snaps.append({"params": params, "grads": {k: v.copy() for k, v in model.grads.items()},
                          "loss": float(np.float32(loss))})
            model.sgd_step(lr)
        return snaps
