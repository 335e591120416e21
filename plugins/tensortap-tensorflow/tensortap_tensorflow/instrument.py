"""`tensortap run` for Keras: the model whose fit / evaluate / predict (or *_on_batch) is called
is attached to the run's hook; the adapter then injects its callback into that call and every
later one, exactly as `tt.Hook(...).register(model)` does.
This module does not import tensorflow or keras at top level."""
from __future__ import annotations

import functools
import threading
from typing import Callable

from tensortap.zerocode.session import Instrumentation

from .patching import is_patched

METHODS = ("fit", "evaluate", "predict", "train_on_batch", "test_on_batch", "predict_on_batch")


class KerasInstrumentation(Instrumentation):
    """Patches keras.Model's training entry points at class level."""

    looks_for = ("Keras: a model's fit / evaluate / predict / train_on_batch / test_on_batch / predict_on_batch "
                 "(the tensortap callback is injected)",)

    def __init__(self, session, framework: str) -> None:
        super().__init__(session, framework)
        self._inside = threading.local()

    def install(self) -> None:
        # tensorflow may finish importing while keras is still executing (keras imports it): patch
        # keras.Model once keras itself is complete
        self.session.when_imported("keras", self._patch)

    def _patch(self, keras) -> None:
        for m in METHODS:
            if hasattr(keras.Model, m):
                self.session.patch(keras.Model, m, lambda original, m=m: self._wrap(original, m))

    def _wrap(self, original: Callable, method: str) -> Callable:
        inst = self

        @functools.wraps(original)
        def run(model, *args, **kwargs):
            if getattr(inst._inside, "on", False):  # called back by the adapter's own wrapper
                return original(model, *args, **kwargs)
            hook = inst.session.attach(model, f"{type(model).__name__}.{method} (Keras)")
            if hook is None or not is_patched(model, method):
                return original(model, *args, **kwargs)
            inst._inside.on = True
            try:  # the adapter's instance wrapper adds the callback, then comes back here
                return getattr(model, method)(*args, **kwargs)
            finally:
                inst._inside.on = False

        return run
