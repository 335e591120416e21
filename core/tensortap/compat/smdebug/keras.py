"""smdebug's KerasHook: a Hook that is also a Keras callback (`model.fit(..., callbacks=[hook])`).

Every callback method is the tensortap-tensorflow plugin's callback's (the core imports no
framework); metrics and losses are always included, as smdebug's Keras hook did. `wrap_optimizer`
returns the optimizer unchanged: tensortap reads gradients where the optimizer applies them.
"""
from __future__ import annotations

from typing import Any, Sequence

from .hook import Hook

#: what a Keras CallbackList reads from a callback besides its on_* methods
CALLBACK_ATTRS = ("set_params", "params", "model", "async_safe", "_supports_tf_logs")


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


class KerasHook(Hook):
    """`KerasHook(out_dir, ...)` with smdebug's Hook arguments; pass it in `callbacks=[...]`."""

    default_include_collections: Sequence[str] = ("metrics", "losses")

    @property
    def tensortap_callback(self):
        """The plugin's Keras callback this hook stands for (the adapter adds no second one)."""
        return self.keras_callback()

    def set_model(self, model: Any) -> None:
        if not self.inert:
            self.keras_callback().set_model(model)

    def register_model(self, model: Any) -> None:
        self.register(model)

    def wrap_optimizer(self, optimizer: Any) -> Any:
        return optimizer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_") or name in CALLBACK_ATTRS:
            if self.__dict__.get("inert", True):
                return _noop if name.startswith("on_") or name == "set_params" else None
            return getattr(self.keras_callback(), name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
