"""`with hook.wrap_tape(tf.GradientTape()) as tape:` for custom training loops.

Entering the wrapped tape starts a step (TRAIN) and saves the registered model's weights;
`tape.gradient(target, sources)` returns the real gradients and, on saved steps, records
`gradients/<source name>`, the sources' values (weights/biases: what this step's forward used)
and the target as `loss` when it is a scalar.

Inside a tf.function the Python code runs only while tracing, so the wrapper puts the work in
the graph instead: entering adds a `tf.py_function` that starts the step at run time and
returns whether it is saved; the gradient capture is a `tf.py_function` inside a `tf.cond` on
that answer. An unsaved compiled step costs that one py_function call (tens of microseconds).
Not available under XLA (jit_compile=True).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tensortap.modes import TRAIN

from .naming import is_bias, variable_name


class WrappedTape:
    """Proxy of a tf.GradientTape that records through a TensorFlowAdapter."""

    def __init__(self, adapter, tape: tf.GradientTape) -> None:
        if not isinstance(tape, tf.GradientTape):
            from tensortap.errors import ConfigError

            raise ConfigError(f"wrap_tape needs a tf.GradientTape, got {type(tape).__name__}: "
                              "write `with hook.wrap_tape(tf.GradientTape()) as tape:`")
        self._adapter = adapter
        self._tape = tape
        self._graph = None
        self._preds = None
        self._passthrough = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tape, name)

    # ---- step start ---------------------------------------------------------------------
    @tf.autograph.experimental.do_not_convert
    def __enter__(self) -> "WrappedTape":
        self._tape.__enter__()
        a = self._adapter
        self._passthrough = bool(a.in_fit) or (a.model is not None and not a._active)
        if self._passthrough:
            return self
        a.tape_depth += 1
        if tf.executing_eagerly():
            self._begin_runtime(arm=True)
        else:
            from tensorflow.python.framework import ops as _ops

            if a._graph_ok():
                flags = tf.py_function(lambda: self._begin_runtime(arm=False), [], [tf.bool, tf.bool])
                self._graph = _ops.get_default_graph()
                self._preds = {"any": flags[0], "outputs": flags[1]}
                a._graph_preds[self._graph] = self._preds
        return self

    def _begin_runtime(self, arm: bool):
        """Runs eagerly (directly, or inside the py_function at each compiled step). Only an eager
        step arms the eager taps: a compiled step's own taps are guarded by the returned flags."""
        a, session = self._adapter, self._adapter.session
        a.armed = False
        session.begin_step(TRAIN)
        a._counts = {}
        a.armed = arm
        a.capture_weights(a.model, batched=arm)
        any_ = (session.wants("gradients") or session.wants("losses") or session.wants("weights")
                or session.wants("biases"))
        outs = (session.wants("outputs") or session.wants("inputs") or session.wants("attention")
                or session.selects(by_name=True))
        return tf.constant(bool(any_ or outs)), tf.constant(bool(outs))

    @tf.autograph.experimental.do_not_convert
    def __exit__(self, *exc) -> Any:
        a = self._adapter
        if not self._passthrough:
            a.tape_depth = max(0, a.tape_depth - 1)
            if self._graph is not None:
                a._graph_preds.pop(self._graph, None)
        return self._tape.__exit__(*exc)

    # ---- gradients ----------------------------------------------------------------------
    @tf.autograph.experimental.do_not_convert
    def gradient(self, target, sources, output_gradients=None, **kwargs):
        grads = self._tape.gradient(target, sources, output_gradients=output_gradients, **kwargs)
        if self._passthrough:
            return grads
        a = self._adapter
        try:
            flat_s, flat_g = tf.nest.flatten(sources), tf.nest.flatten(grads)
            named = [(variable_name(s), s, g) for s, g in zip(flat_s, flat_g)
                     if g is not None and (isinstance(s, tf.Variable) or _is_keras_var(s))]
            if tf.executing_eagerly():
                self._record(target, [(n, s.numpy(), tf.convert_to_tensor(g).numpy()) for n, s, g in named])
                if not getattr(self._tape, "_persistent", False):
                    a.armed = False  # later forwards (validation, ...) are not part of this step
            elif self._preds is not None:
                self._record_graph(target, named)
        except Exception as e:  # noqa: BLE001
            a.session.report_error("could not record tape gradients", e)
        return grads

    def _record(self, target, items, compiled: bool = False) -> None:
        a, session = self._adapter, self._adapter.session
        if not (a.armed or compiled):
            return
        if target is not None and session.wants("losses") and np.ndim(_np(target)) == 0:
            session.capture("loss", _np(target), "losses")
        for name, value, grad in items:
            if session.wants("gradients"):
                session.capture(f"gradients/{name}", grad, "gradients")
            cat = "biases" if is_bias(name) else "weights"
            if session.wants(cat):
                session.capture(name, value, cat)

    def _record_graph(self, target, named) -> None:
        pred = self._preds["any"]
        names = [n for n, _, _ in named]
        scalar = target is not None and tf.is_tensor(target) and target.shape.rank == 0

        def body(*vals):
            k = len(names)
            tgt = vals[0].numpy() if scalar else None
            values, grads = vals[1:1 + k], vals[1 + k:]
            self._record(tgt, [(n, v.numpy(), g.numpy()) for n, v, g in zip(names, values, grads)], compiled=True)
            return tf.constant(True)

        def on():
            ins = [target if scalar else tf.constant(0.0)]
            ins += [tf.convert_to_tensor(s) for _, s, _ in named]
            ins += [tf.convert_to_tensor(g) for _, _, g in named]
            return tf.identity(tf.py_function(body, ins, tf.bool))

        tf.cond(pred, on, lambda: tf.constant(False))


def _np(t) -> np.ndarray:
    return np.array(t.numpy() if hasattr(t, "numpy") else t, copy=True)


def _is_keras_var(obj: Any) -> bool:
    try:
        import keras

        return isinstance(obj, keras.Variable)
    except (ImportError, AttributeError):  # pragma: no cover
        return False
