"""A tiny numpy MLP that really trains, with hook points like a framework's.

Layers fc1 -> relu -> fc2, softmax cross-entropy, plain SGD. Parameters are named
"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias" (torch's convention), stored as
float32, and updated in place, like a framework does: a capture that keeps a view
instead of a copy is caught by the tests.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np


class NumpyMLP:
    def __init__(self, n_in: int = 8, n_hidden: int = 16, n_out: int = 4, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params: Dict[str, np.ndarray] = {
            "fc1.weight": (rng.standard_normal((n_hidden, n_in)) / np.sqrt(n_in)).astype(np.float32),
            "fc1.bias": np.zeros(n_hidden, np.float32),
            "fc2.weight": (rng.standard_normal((n_out, n_hidden)) / np.sqrt(n_hidden)).astype(np.float32),
            "fc2.bias": np.zeros(n_out, np.float32),
        }
        self.grads: Dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.training = True
        self.forward_pre_hooks: List[Callable[["NumpyMLP"], None]] = []
        self.layer_hooks: List[Callable[[str, np.ndarray, np.ndarray], None]] = []  # (layer, input, output)
        self.grad_hooks: List[Callable[[str, np.ndarray], None]] = []
        self.loss_hooks: List[Callable[[float], None]] = []
        self._cache: Tuple = ()

    def train(self, mode: bool = True) -> "NumpyMLP":
        self.training = mode
        return self

    def eval(self) -> "NumpyMLP":
        return self.train(False)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for h in list(self.forward_pre_hooks):
            h(self)
        p = self.params
        x = np.asarray(x, np.float32)
        z1 = x @ p["fc1.weight"].T + p["fc1.bias"]
        self._emit("fc1", x, z1)
        a1 = np.maximum(z1, 0)
        self._emit("relu", z1, a1)
        z2 = a1 @ p["fc2.weight"].T + p["fc2.bias"]
        self._emit("fc2", a1, z2)
        self._cache = (x, z1, a1, z2)
        return z2

    __call__ = forward

    def _emit(self, layer: str, inp: np.ndarray, out: np.ndarray) -> None:
        for h in list(self.layer_hooks):
            h(layer, inp, out)

    def loss(self, logits: np.ndarray, y: np.ndarray) -> float:
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = float(-logp[np.arange(len(y)), y].mean())
        for h in list(self.loss_hooks):
            h(value)
        self._probs = np.exp(logp)
        self._y = y
        return value

    def backward(self) -> None:
        x, z1, a1, z2 = self._cache
        n = len(self._y)
        dz2 = self._probs.copy()
        dz2[np.arange(n), self._y] -= 1
        dz2 /= n
        p, g = self.params, self.grads
        g["fc2.weight"][...] = dz2.T @ a1
        g["fc2.bias"][...] = dz2.sum(0)
        dz1 = (dz2 @ p["fc2.weight"]) * (z1 > 0)
        g["fc1.weight"][...] = dz1.T @ x
        g["fc1.bias"][...] = dz1.sum(0)
        for name in g:
            for h in list(self.grad_hooks):
                h(name, g[name])

    def sgd_step(self, lr: float = 0.1) -> None:
        for k in self.params:
            self.params[k] -= np.float32(lr) * self.grads[k]  # in place, as frameworks do

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float = 0.1) -> float:
        out = self.forward(x)
        loss = self.loss(out, y)
        self.backward()
        self.sgd_step(lr)
        return loss


def make_data(n: int = 64, n_in: int = 8, n_out: int = 4, seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """A learnable classification task: the label is the argmax of a fixed linear map."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out))
    return x, (x @ w).argmax(1).astype(np.int64)
