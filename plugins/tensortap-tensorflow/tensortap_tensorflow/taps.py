"""Getting tensors out of compiled (tf.function) Keras steps, only on saved steps.

Two mechanisms, both guarded by a `tf.cond` on a boolean tf.Variable ("switch") that the
callback turns on only for saved steps, so an unsaved step costs one variable read and an
untaken branch per tap:

- Slots (gradients, the loss): the branch assigns the tensor to a non-trainable variable of
  the same shape, which the callback reads after the step. Plain variable assignments, so it
  also works under XLA (jit_compile=True) and per replica under tf.distribute (ON_READ slots).
- Sends (layer outputs, attention, gradients of layer outputs): the branch runs a
  `tf.py_function` that hands the eager values to the hook. Needed because these change shape
  from batch to batch; not available under XLA (reported once, skipped).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

SWITCHES = ("gradients", "losses", "outputs", "attention", "output_gradients", "late_weights")


class Switches:
    """One boolean tf.Variable per kind of capture; flipped eagerly, read inside compiled steps."""

    def __init__(self) -> None:
        with tf.init_scope():
            self.vars = {n: tf.Variable(False, trainable=False, name=f"tensortap_{n}") for n in SWITCHES}
        self.state = {n: False for n in SWITCHES}

    def set(self, name: str, on: bool) -> None:
        """Assign only when the value changes: steady unsaved steps cost nothing here."""
        if self.state[name] != on:
            self.vars[name].assign(on)
            self.state[name] = on

    def all_off(self) -> None:
        for n in SWITCHES:
            self.set(n, False)


def replica_info() -> Tuple[Any, int]:
    """(replica id tensor or 0, number of replicas in sync) of the current context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return 0, 1
    return ctx.replica_id_in_sync_group, int(ctx.num_replicas_in_sync)


def distributed_context() -> bool:
    """True when running inside a replica of a non-default tf.distribute strategy."""
    return tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False \
        and tf.distribute.get_strategy().num_replicas_in_sync > 1


class Slots:
    """Variables that receive gradients / the loss inside compiled steps on saved steps."""

    def __init__(self) -> None:
        self.vars: Dict[str, Any] = {}

    def ensure(self, key: str, shape, dtype, strategy=None) -> Optional[Any]:
        """The slot for `key`, created on first use. Under a distribution strategy slots are
        created ahead of time (see `prepare`): a replica cannot create variables."""
        v = self.vars.get(key)
        if v is None:
            if distributed_context():
                return None
            with tf.init_scope():
                v = self.vars[key] = tf.Variable(tf.zeros(shape, dtype), trainable=False,
                                                 name="tensortap_slot", shape=shape)
        return v

    def prepare(self, key: str, shape, dtype, strategy) -> None:
        """Create a per-replica (ON_READ) slot under `strategy` before the step is traced."""
        if key in self.vars:
            return
        with strategy.scope():
            self.vars[key] = tf.Variable(tf.zeros(shape, dtype), trainable=False, name="tensortap_slot",
                                         synchronization=tf.VariableSynchronization.ON_READ,
                                         aggregation=tf.VariableAggregation.NONE)

    @staticmethod
    def store(pred, pairs: Sequence[Tuple[Any, Any]]) -> None:
        """In graph mode: if pred, assign each tensor to its slot."""
        if not pairs:
            return

        def on():
            ops = [slot.assign(tf.cast(t, slot.dtype)) for slot, t in pairs]
            with tf.control_dependencies([o.op if hasattr(o, "op") else o for o in ops if o is not None]):
                return tf.constant(True)

        tf.cond(pred, on, lambda: tf.constant(False))

    @staticmethod
    def _locals(v) -> Sequence[Any]:
        strategy = getattr(v, "_distribute_strategy", None)
        return strategy.experimental_local_results(v) if strategy is not None else (v,)

    def read(self, key: str) -> List[np.ndarray]:
        """The slot's value per replica (one entry without a strategy), as numpy copies."""
        v = self.vars.get(key)
        if v is None:
            return []
        return [np.array(x.numpy(), copy=True) for x in self._locals(v)]

    def marker(self, group: str, strategy=None) -> Optional[Any]:
        """The boolean slot a step sets when it stored `group` (so stale slots are never read)."""
        key = f"written:{group}"
        if strategy is not None:
            self.prepare(key, [], tf.bool, strategy)
            return self.vars[key]
        return self.ensure(key, [], tf.bool)

    def take_marker(self, group: str) -> bool:
        """True (and reset) if the last step stored `group`."""
        v = self.vars.get(f"written:{group}")
        if v is None:
            return False
        hit = False
        for x in self._locals(v):
            if bool(x.numpy()):
                hit = True
                x.assign(False)
        return hit


class BatchReader:
    """Reads many variables with one compiled call (one dispatch instead of one per variable:
    eager reads cost ~0.1-0.2 ms each, which dominated saving every step)."""

    def __init__(self) -> None:
        self._fns: Dict[Tuple[int, ...], Any] = {}

    def read(self, variables: Sequence[Any]) -> List[np.ndarray]:
        if not variables:
            return []
        key = tuple(id(v) for v in variables)
        fn = self._fns.get(key)
        if fn is None:
            vs = list(variables)
            fn = self._fns[key] = tf.function(lambda: [tf.identity(v) for v in vs])
        return [np.array(t.numpy(), copy=True) for t in fn()]


def send(pred, fn: Callable[..., None], tensors: Sequence[Any]) -> None:
    """In graph mode: if pred, call fn(replica_id, *numpy_values) from a tf.py_function."""
    rid, _ = replica_info()
    tensors = [tf.convert_to_tensor(t) for t in tensors]

    def body(r, *vals):
        fn(int(r.numpy()), *[v.numpy() for v in vals])
        return tf.constant(True)

    def on():
        out = tf.py_function(lambda r, *v: body(r, *v), [tf.cast(rid, tf.int32), *tensors], tf.bool)
        return tf.identity(out)

    tf.cond(pred, on, lambda: tf.constant(False))


def in_xla_context() -> bool:
    """True while tracing a function compiled with XLA (py_function cannot run there)."""
    try:
        from tensorflow.python.framework import ops as _ops
        from tensorflow.python.ops import control_flow_util

        g = _ops.get_default_graph()
        if getattr(g, "_xla_compile", False):
            return True
        return bool(control_flow_util.GraphOrParentsInXlaContext(g))
    except Exception:  # noqa: BLE001
        return False
