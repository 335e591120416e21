"""The numpy-only fake adapter: the transport seam that exercises the whole core in tests."""
from __future__ import annotations

from typing import Any, Iterator, Tuple

import numpy as np

from ..adapter import Adapter, Handle
from ..modes import EVAL, TRAIN
from .numpy_mlp import NumpyMLP


def _remover(lst, fn):
    return Handle(lambda: fn in lst and lst.remove(fn))


class NumpyAdapter(Adapter):
    name = "numpy"

    def attach(self, model: NumpyMLP) -> None:
        hook = self.hook

        def pre(m):
            hook.begin_step(TRAIN if m.training else EVAL)
            for kind in ("weights", "biases"):
                if hook.wants(kind):
                    for name, p in self.named_parameters(m):
                        if (kind == "biases") == name.endswith("bias"):
                            hook.capture(name, p, kind)

        def layer(name, inp, out):
            if hook.wants("inputs"):
                hook.capture(f"{name}/input_0", inp, "inputs")
            if hook.wants("outputs"):
                hook.capture(f"{name}/output_0", out, "outputs")

        def grad(name, g):
            if hook.wants("gradients"):
                hook.capture(f"gradients/{name}", g, "gradients")

        for lst, fn in ((model.forward_pre_hooks, pre), (model.layer_hooks, layer), (model.grad_hooks, grad)):
            lst.append(fn)
            self.handles.append(_remover(lst, fn))

    def register_loss(self, loss_obj: Any, name: str) -> None:
        def on_loss(value):
            self.hook.capture(name, np.float32(value), "losses")

        loss_obj.loss_hooks.append(on_loss)
        self.handles.append(_remover(loss_obj.loss_hooks, on_loss))

    def named_parameters(self, model: NumpyMLP) -> Iterator[Tuple[str, Any]]:
        return iter(model.params.items())

    def named_layers(self, model: NumpyMLP) -> Iterator[Tuple[str, Any]]:
        return iter([("fc1", None), ("relu", None), ("fc2", None)])

    def to_numpy(self, tensor: Any) -> np.ndarray:
        return np.array(tensor, copy=True)

    def is_tensor(self, obj: Any) -> bool:
        return False
