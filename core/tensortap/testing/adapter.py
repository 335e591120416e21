"""The numpy-only adapter: tensortap's reference "fourth framework", written against the public
capture interface only (`tt.Capture` as `self.session`, `tt.Adapter`, `tt.Handle`). It drives the
whole core in tests, with the NumpyMLP's hook points standing in for a framework's."""
from __future__ import annotations

from typing import Any, Callable, Iterator, List, Tuple

import numpy as np

from tensortap.adapter import Adapter, Handle
from tensortap.modes import EVAL, TRAIN
from .numpy_mlp import NumpyMLP


def _added(hooks: List[Any], fn: Callable[..., None]) -> Handle:
    """Add `fn` to one of the model's lists of hook functions; the handle takes it off again."""
    hooks.append(fn)

    def remove() -> None:
        if fn in hooks:
            hooks.remove(fn)

    return Handle(remove)


class NumpyAdapter(Adapter):
    """Steps begin at each forward (TRAIN or EVAL from `model.training`); weights and biases are
    captured then, layer inputs/outputs as each layer runs, gradients as backward produces them."""

    name = "numpy"

    def attach(self, model: NumpyMLP) -> None:
        session = self.session
        assert session is not None, "NumpyAdapter.attach needs the hook's session"

        def pre(m: NumpyMLP) -> None:
            session.begin_step(TRAIN if m.training else EVAL)
            for kind in ("weights", "biases"):
                if session.wants(kind):
                    session.capture_many((name, p, kind) for name, p in self.named_parameters(m)
                                         if (kind == "biases") == name.endswith("bias"))

        def layer(name: str, inp: np.ndarray, out: np.ndarray) -> None:
            if session.wants("inputs"):
                session.capture(f"{name}/input_0", inp, "inputs")
            if session.wants("outputs"):
                session.capture(f"{name}/output_0", out, "outputs")

        def grad(name: str, g: np.ndarray) -> None:
            if session.wants("gradients"):
                session.capture(f"gradients/{name}", g, "gradients")

        self.handles += [_added(model.forward_pre_hooks, pre), _added(model.layer_hooks, layer),
                         _added(model.grad_hooks, grad)]

    def register_loss(self, loss_obj: Any, name: str) -> None:
        """The NumpyMLP computes its own loss: record it each time `loss_obj.loss` runs."""
        session = self.session
        assert session is not None

        def on_loss(value: float) -> None:
            session.capture(name, np.float32(value), "losses")

        self.handles.append(_added(loss_obj.loss_hooks, on_loss))

    def named_parameters(self, model: NumpyMLP) -> Iterator[Tuple[str, Any]]:
        return iter(model.params.items())

    def named_layers(self, model: NumpyMLP) -> Iterator[Tuple[str, Any]]:
        return iter([("fc1", None), ("relu", None), ("fc2", None)])

    def to_numpy(self, tensor: Any) -> np.ndarray:
        return np.array(tensor, copy=True)

    def is_tensor(self, obj: Any) -> bool:
        return False
