"""TensorFlowAdapter: Keras 3 / TF2 capture for tensortap.

What is patched on `attach(model)` (every patch is an instance attribute, removed by detach):
- each sub-layer's `call` (layer inputs and outputs, gradients of outputs where asked) — only
  when a collection of the hook can want them;
- each MultiHeadAttention's `_compute_attention` (attention scores) — when "attention" may be wanted;
- the model's `call` (per-forward numbering of layers called more than once);
- `model.compute_loss` (the step's loss) and the optimizer's `apply` (the gradients it receives);
- `fit` / `evaluate` / `predict` / `*_on_batch` so `hook.register(model)` alone adds the callback.
How values leave compiled steps is in taps.py; the step boundaries are in callback.py / tape.py.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from tensortap.adapter import Adapter, Handle
from tensortap.capture import is_quiet
from tensortap.errors import StopTraining
from tensortap.modes import EVAL, PREDICT, TRAIN

from . import attention as _att
from .naming import float_variables, is_bias, layer_info, layer_name, sub_layers, variable_name
from .patching import patch
from .taps import BatchReader, Slots, Switches, in_xla_context, replica_info, send

log = logging.getLogger("tensortap")

FIT_METHODS = ("fit", "evaluate", "predict")
ON_BATCH = {"train_on_batch": TRAIN, "test_on_batch": EVAL, "predict_on_batch": PREDICT}


class TensorFlowAdapter(Adapter):
    """Drives a tensortap Hook from Keras fit/evaluate/predict, custom GradientTape loops and tf.function."""

    name = "tensorflow"

    def __init__(self, session) -> None:
        super().__init__(session)
        self._switches: Optional[Switches] = None
        self.slots = Slots()
        self._reader = BatchReader()
        self.armed = False          # True between a step's begin and end: eager taps may capture
        self.in_fit = 0             # depth of fit/evaluate/predict driven by our callback
        self.tape_depth = 0
        self._callback = None
        self._counts: Dict[str, int] = {}
        self._graph_preds: Dict[Any, Dict[str, Any]] = {}
        self._patched_models: set = set()
        self._optimizer = None
        self._opt_handles: List[Handle] = []
        self._active = False
        self._xla_reported = False
        self._late_weights = False
        self._gradcams: List[Tuple[np.ndarray, Any, Any]] = []
        self._described: Dict[int, str] = {}  # id(layer) -> the name its description was recorded under

    # ---- framework basics ----------------------------------------------------------------
    @property
    def switches(self) -> Switches:
        if self._switches is None:
            self._switches = Switches()
        return self._switches

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """A numpy copy (tf's .numpy() may share the tensor's buffer on CPU)."""
        if hasattr(tensor, "numpy"):
            return np.array(tensor.numpy(), copy=True)
        import tensorflow as tf

        return np.array(tf.convert_to_tensor(tensor).numpy(), copy=True)

    def is_tensor(self, obj: Any) -> bool:
        import tensorflow as tf

        if tf.is_tensor(obj) or isinstance(obj, tf.Variable):
            return True
        try:
            import keras

            return isinstance(obj, keras.Variable)
        except (ImportError, AttributeError):  # pragma: no cover
            return False

    def named_parameters(self, model: Any) -> Iterator[Tuple[str, Any]]:
        return ((variable_name(v), v) for v in getattr(model, "trainable_variables", []))

    def named_layers(self, model: Any) -> Iterator[Tuple[str, Any]]:
        return ((layer_name(layer), layer) for layer in sub_layers(model))

    def rank(self) -> int:
        return 0

    # ---- what the hook may ever want (decides which patches are worth installing) ----------
    def _may_want(self, category: str) -> bool:
        return self.session is not None and self.session.may_select(category=category)

    def _output_grad_layers_wanted(self, name: str) -> bool:
        """Gradients of a layer's outputs are taken only where a regex/name collection asks for them
        (never for the bare "gradients" collection: that one means parameter gradients)."""
        return self.session is not None and self.session.may_select(f"gradients/{name}/output_0", "gradients",
                                                                    by_name=True)

    def _want_now(self, category: str) -> bool:
        return self.armed and not is_quiet() and self.session.wants(category)

    # ---- attach / detach -------------------------------------------------------------------
    def attach(self, model: Any) -> None:
        """Patch the model (see module docstring); safe to call again for the same model."""
        if id(model) in self._patched_models:
            return
        self.model = model
        self._active = True
        _ = self.switches  # create the switches eagerly, outside any tf.function or strategy replica
        want_out = self._may_want("outputs") or self._may_want("inputs") or self._regex_collections()
        want_att = self._may_want("attention")
        for layer in sub_layers(model):
            if want_out:
                self.handles.append(patch(layer, "call", lambda orig, layer=layer: self._layer_call(layer, orig)))
            if want_att and _att.is_mha(layer):
                self.handles.append(_att.patch_compute_attention(layer, self._on_attention))
        if hasattr(model, "call"):
            self.handles.append(patch(model, "call", lambda orig: self._model_call(model, orig)))
        if hasattr(model, "compute_loss"):
            self.handles.append(patch(model, "compute_loss", lambda orig: self._compute_loss(orig)))
        for m in FIT_METHODS:
            if hasattr(model, m):
                self.handles.append(patch(model, m, lambda orig: self._with_callback(orig)))
        for m, mode in ON_BATCH.items():
            if hasattr(model, m):
                self.handles.append(patch(model, m, lambda orig, mode=mode: self._on_batch(orig, mode)))
        self._patched_models.add(id(model))
        self.handles.append(Handle(lambda: self._patched_models.discard(id(model))))
        self.handles.append(Handle(self._unwrap_optimizer))
        self.handles.append(Handle(lambda: self._retrace(model)))
        self.ensure_optimizer(model)
        self._retrace(model)

    def detach(self) -> None:
        self._active = False
        if self._switches is not None:
            self._switches.all_off()
        super().detach()

    @staticmethod
    def _retrace(model: Any) -> None:
        """Compiled step functions traced before (or with) our patches are rebuilt on next use."""
        for kind in ("train", "test", "predict"):
            if getattr(model, f"{kind}_function", None) is not None:
                try:
                    getattr(model, f"make_{kind}_function")(force=True)
                except Exception:  # noqa: BLE001 - a model without these methods keeps its function
                    pass

    def ensure_optimizer(self, model: Any) -> bool:
        """Wrap the model's optimizer `apply` (once per optimizer); True when newly wrapped."""
        opt = getattr(model, "optimizer", None)
        if opt is None or opt is self._optimizer or not hasattr(opt, "apply"):
            return False
        self._unwrap_optimizer()
        target = getattr(opt, "inner_optimizer", None) or opt  # LossScaleOptimizer: unscaled gradients
        if self._may_want("gradients") or self._may_want("weights") or self._may_want("biases"):
            self._opt_handles.append(patch(target, "apply", lambda orig: self._optimizer_apply(target, orig)))
        self._optimizer = opt
        return True

    def _unwrap_optimizer(self) -> None:
        while self._opt_handles:
            self._opt_handles.pop().remove()
        self._optimizer = None

    # ---- the patched methods -------------------------------------------------------------
    def _model_call(self, model, original):
        def call(*args, **kwargs):
            if self._active and not is_quiet():
                self._counts = {}  # a new forward pass: repeated layer calls are numbered from here
            return original(*args, **kwargs)

        return call

    def _layer_call(self, layer, original):
        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            if not self._active or is_quiet():
                return out
            try:
                return self._tap_layer(layer, args[:1], out)
            except Exception as e:  # noqa: BLE001
                self.session.report_error(f"could not tap layer {layer_name(layer)!r}", e)
                return out

        return call

    def _call_base(self, name: str) -> str:
        k = self._counts.get(name, 0)
        self._counts[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def _regex_collections(self) -> bool:
        return self.session is not None and self.session.may_select(by_name=True)

    def _tap_layer(self, layer, inputs, out):
        """Layer inputs (the call's first argument, flattened) and outputs: captured eagerly, or
        sent out of a compiled step under the "outputs" switch; output gradients via a probe."""
        import tensorflow as tf

        flat = tf.nest.flatten(out)
        idx = [i for i, t in enumerate(flat) if tf.is_tensor(t)]
        if not idx:
            return out
        name = layer_name(layer)
        if self._described.get(id(layer)) != name:  # once per layer (its name is final once it is called)
            self._described[id(layer)] = name
            self.session.describe_layers([layer_info(name, layer)])
        base = self._call_base(name)
        regex = self._regex_collections()
        items = []
        if self._may_want("inputs") or regex:
            ins = [t for t in tf.nest.flatten(inputs) if tf.is_tensor(t)]
            items += [(f"{base}/input_{i}", "inputs", t) for i, t in enumerate(ins)]
        if self._may_want("outputs") or regex:
            items += [(f"{base}/output_{i}", "outputs", flat[i]) for i in idx]
        if items:
            if tf.executing_eagerly():
                for name, cat, t in items:
                    if self._want_now(cat):
                        self.session.capture(name, t, cat)
            elif self._graph_ok():
                send(self._pred("outputs"), self._sender([n for n, _, _ in items], [c for _, c, _ in items]),
                     [t for _, _, t in items])
        if self._output_grad_layers_wanted(base):
            for i in idx:
                flat[i] = self._grad_probe(flat[i], f"gradients/{base}/output_{i}")
            out = tf.nest.pack_sequence_as(out, flat)
        return out

    def _grad_probe(self, t, name: str):
        """Identity whose backward hands the incoming gradient (d loss / d output) to the session."""
        import tensorflow as tf

        adapter = self

        @tf.custom_gradient
        def probe(x):
            def grad(dy):
                if tf.executing_eagerly():
                    if adapter._want_now("gradients"):
                        adapter.session.capture(name, dy, "gradients")
                    return dy
                if adapter._graph_ok():
                    send(adapter._pred("output_gradients"), adapter._sender([name], "gradients"), [dy])
                return tf.identity(dy)

            return tf.identity(x), grad

        return probe(t)

    def _on_attention(self, layer, make) -> None:
        import tensorflow as tf

        if not self._active or is_quiet():
            return
        if isinstance(make, BaseException):
            self.session.report_error(f"could not compute attention scores of {layer_name(layer)!r}", make)
            return
        base = "attention/" + self._call_base("attention/" + layer_name(layer))[len("attention/"):]
        if tf.executing_eagerly():
            if self._want_now("attention"):
                self.session.capture(base, make(), "attention")
        elif self._graph_ok():
            pred = self._pred("attention")
            sender = self._sender([base], "attention")
            rid, _ = replica_info()

            def on():
                out = tf.py_function(lambda r, s: (sender(int(r.numpy()), s.numpy()), True)[1],
                                     [tf.cast(rid, tf.int32), make()], tf.bool)
                return tf.identity(out)

            tf.cond(pred, on, lambda: tf.constant(False))

    def _compute_loss(self, original):
        def compute_loss(*args, **kwargs):
            loss = original(*args, **kwargs)
            if self._active and not is_quiet():
                try:
                    self._tap_loss(loss)
                except Exception as e:  # noqa: BLE001
                    self.session.report_error("could not tap the loss", e)
            return loss

        return compute_loss

    def _tap_loss(self, loss) -> None:
        import tensorflow as tf

        if loss is None or not self._may_want("losses"):
            return
        if tf.executing_eagerly():
            if self._want_now("losses"):
                self.session.capture("loss", loss, "losses")
            return
        if self._graph_pred_for_current() is not None:
            return  # a wrapped tape inside tf.function records the loss itself
        slot, mark = self.slots.ensure("loss", [], loss.dtype), self.slots.marker("loss")
        if slot is not None and mark is not None:
            Slots.store(self.switches.vars["losses"], [(slot, loss), (mark, tf.constant(True))])

    def _optimizer_apply(self, optimizer, original):
        def apply(grads, trainable_variables=None):
            if self._active and not is_quiet():
                try:
                    tv = trainable_variables
                    if tv is None:
                        tv = getattr(optimizer, "_trainable_variables", None) or []
                    self._tap_gradients(list(grads), list(tv))
                except Exception as e:  # noqa: BLE001
                    self.session.report_error("could not tap gradients", e)
            return original(grads, trainable_variables)

        return apply

    def _tap_gradients(self, grads, variables) -> None:
        """Gradients the optimizer receives; also the variables' values when the model had none
        at batch begin (built by this very step: their values are read here, before the update)."""
        import tensorflow as tf

        if tf.executing_eagerly():
            for g, v in zip(grads, variables):
                name = variable_name(v)
                if g is not None and self._want_now("gradients"):
                    self.session.capture(f"gradients/{name}", tf.convert_to_tensor(g), "gradients")
                cat = "biases" if is_bias(name) else "weights"
                if self._late_weights and self._want_now(cat):
                    self.session.capture(name, v, cat)
            return
        if self._graph_pred_for_current() is not None:
            return  # inside a tf.function custom loop the wrapped tape records gradients
        pairs, late = [], []
        for g, v in zip(grads, variables):
            if g is None:
                continue
            name = variable_name(v)
            if self._may_want("gradients"):
                slot = self.slots.ensure(f"gradients/{name}", v.shape, g.dtype)
                if slot is not None:
                    pairs.append((slot, tf.convert_to_tensor(g)))
            if self._may_want("weights") or self._may_want("biases"):
                slot = self.slots.ensure(f"value/{name}", v.shape, v.dtype)
                if slot is not None:
                    late.append((slot, tf.convert_to_tensor(v)))
        for group, items in (("gradients", pairs), ("late_weights", late)):
            mark = self.slots.marker(group)
            if items and mark is not None:
                Slots.store(self.switches.vars[group], items + [(mark, tf.constant(True))])

    # ---- graph helpers -------------------------------------------------------------------
    def _graph_ok(self) -> bool:
        if in_xla_context():
            if not self._xla_reported:
                self._xla_reported = True
                self.session.report_error("layer outputs/attention are not captured inside XLA-compiled steps "
                                          "(jit_compile=True); compile with jit_compile=False to capture them",
                                          RuntimeError("XLA"))
            return False
        return True

    def _graph_pred_for_current(self) -> Optional[Dict[str, Any]]:
        from tensorflow.python.framework import ops as _ops

        g = _ops.get_default_graph()
        while g is not None:
            got = self._graph_preds.get(g)
            if got is not None:
                return got
            g = getattr(g, "outer_graph", None)
        return None

    def _pred(self, kind: str):
        """The runtime 'save this?' boolean: a wrapped tape's, else the switch variable."""
        got = self._graph_pred_for_current()
        if got is not None:
            return got["outputs" if kind in ("outputs", "attention") else "any"]
        return self.switches.vars[kind]

    def _sender(self, names: List[str], category):
        """fn(replica_id, *arrays) capturing each array under its name (replica_<i>/ prefix if several);
        `category` is one category or one per name."""
        _, n = replica_info()
        session = self.session
        cats = [category] * len(names) if isinstance(category, str) else list(category)

        def fn(rid: int, *arrays) -> None:
            prefix = f"replica_{rid}/" if n > 1 else ""
            for name, cat, a in zip(names, cats, arrays):
                session.capture(prefix + name, np.asarray(a), cat)

        return fn

    # ---- step-level work (callback and tape call these) -------------------------------------
    def capture_weights(self, model: Any, batched: bool = True) -> None:
        """Save the model's variables now. batched=False inside a tf.py_function: running another
        compiled function from there can deadlock TF's inter-op thread pool."""
        if model is None:
            return
        session = self.session
        ww, wb = session.wants("weights"), session.wants("biases")
        if not (ww or wb):
            return
        picked = [(name, v, "biases" if is_bias(name) else "weights") for name, v in float_variables(model)]
        picked = [p for p in picked if (ww if p[2] == "weights" else wb)]
        variables = [v for _, v, _ in picked]
        values = self._read(variables) if batched else [np.array(v.numpy(), copy=True) for v in variables]
        for (name, _, cat), value in zip(picked, values):
            session.capture(name, value, cat)

    def _read(self, variables) -> List[np.ndarray]:
        """Values of plain or mirrored variables, read in one call when possible."""
        try:
            return self._reader.read(variables)
        except Exception:  # noqa: BLE001 - e.g. variables of another strategy: read one by one
            return [np.array(v.numpy(), copy=True) for v in variables]

    def set_switches(self, graph_kinds: bool = True) -> None:
        sw, session = self.switches, self.session
        on = session.saving and graph_kinds
        sw.set("gradients", on and session.wants("gradients"))
        sw.set("losses", on and session.wants("losses"))
        sw.set("outputs", on and (session.wants("outputs") or session.wants("inputs")
                                  or session.selects(by_name=True)))
        sw.set("attention", on and session.wants("attention"))
        sw.set("output_gradients", on and session.wants("gradients"))

    def read_slots(self, model: Any) -> None:
        """After a compiled step: hand the gradients and loss the step stored to the session."""
        sw = self.switches
        if sw.state["gradients"] and self.slots.take_marker("gradients"):
            keys = [f"gradients/{variable_name(v)}" for v in getattr(model, "trainable_variables", [])]
            keys = [k for k in keys if k in self.slots.vars]
            slots = [self.slots.vars[k] for k in keys]
            if any(getattr(s, "_distribute_strategy", None) is not None for s in slots):
                values = [self.slots.read(k) for k in keys]
            else:
                values = [[a] for a in self._read(slots)]
            for key, per_replica in zip(keys, values):
                self._capture_replicated(key, per_replica, "gradients")
        if sw.state["losses"] and self.slots.take_marker("loss"):
            self._capture_replicated("loss", self.slots.read("loss"), "losses")
        if sw.state["late_weights"] and self.slots.take_marker("late_weights"):
            for v in getattr(model, "trainable_variables", []):
                name = variable_name(v)
                for value in self.slots.read(f"value/{name}")[:1]:
                    self.session.capture(name, value, "biases" if is_bias(name) else "weights")

    def _capture_replicated(self, name: str, values: List[np.ndarray], category: str) -> None:
        if not values:
            return
        if len(values) == 1:
            self.session.capture(name, values[0], category)
            return
        total = values[0].copy()
        for v in values[1:]:
            total = total + v
        self.session.capture(name, total, category)
        for i, v in enumerate(values):
            self.session.capture(f"replica_{i}/{name}", v, category)

    def prepare_distributed(self, model: Any) -> None:
        """Under a multi-replica strategy, create per-replica slots before the step is traced."""
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is None or strategy.num_replicas_in_sync <= 1:
            return
        if self._may_want("gradients"):
            for v in getattr(model, "trainable_variables", []):
                self.slots.prepare(f"gradients/{variable_name(v)}", v.shape, v.dtype, strategy)
            self.slots.marker("gradients", strategy)
        if self._may_want("losses"):
            self.slots.prepare("loss", [], "float32", strategy)
            self.slots.marker("loss", strategy)

    # ---- Keras integration -------------------------------------------------------------------
    def keras_callback(self):
        """The Keras callback bound to this adapter (one per hook)."""
        if self._callback is None:
            from .callback import TensorTapCallback

            self._callback = TensorTapCallback(self)
        return self._callback

    def _with_callback(self, original):
        def run(*args, **kwargs):
            cbs = kwargs.get("callbacks")
            cb = self.keras_callback()
            if self._active:
                if cbs is None:
                    kwargs["callbacks"] = [cb]
                elif isinstance(cbs, (list, tuple)) and not any(
                        c is cb or getattr(c, "tensortap_callback", None) is cb for c in cbs):  # a hook standing for it
                    kwargs["callbacks"] = list(cbs) + [cb]
            return original(*args, **kwargs)

        return run

    def _on_batch(self, original, mode):
        def run(*args, **kwargs):
            if not self._active or self.in_fit:
                return original(*args, **kwargs)
            cb = self.keras_callback()
            cb.set_model(self.model)
            self.begin_batch(self.model, mode)
            out = original(*args, **kwargs)
            logs = out if isinstance(out, dict) else ({"loss": out} if np.ndim(out) == 0 and mode != PREDICT else None)
            self.end_batch(self.model, logs)
            return out

        return run

    def begin_batch(self, model: Any, mode) -> None:
        """Step boundary at a Keras batch begin: start the step, set the switches, save weights."""
        if mode == TRAIN:
            if self.ensure_optimizer(model):
                self._retrace(model)
        self.armed = False
        self.session.begin_step(mode)
        self.armed = True
        session = self.session
        self._late_weights = mode == TRAIN and not getattr(model, "weights", None) and (
            session.wants("weights") or session.wants("biases"))
        self.set_switches()
        self.switches.set("late_weights", bool(self._late_weights))
        self.capture_weights(model)

    def end_batch(self, model: Any, logs: Optional[dict]) -> None:
        """Step end: read what the compiled step stored, save the logs' metrics, hand the step over."""
        session = self.session
        try:
            if session.saving:
                self.read_slots(model)
                if self._gradcams and session.mode == TRAIN and session.wants("feature_maps"):
                    self._record_gradcams(model)
                if logs and session.wants("metrics"):
                    for k, v in logs.items():
                        if np.ndim(v) == 0:
                            session.capture("loss_running_mean" if k == "loss" else k,
                                            np.float64(np.asarray(v)), "metrics")
        finally:
            self.armed = False
            session.end_step()
        if session.stop_requested is not None and hasattr(model, "stop_training"):
            model.stop_training = True  # Keras checks this right after on_train_batch_end

    def watch_gradcam(self, images: Any, target_layer: Any, targets=None) -> None:
        """On every saved TRAIN step of fit(), save Grad-CAM of these images (collection "feature_maps")."""
        from .gradcam import find_layer

        if self.model is not None:
            find_layer(self.model, target_layer)  # a bad name fails now, not during training
        self._gradcams.append((np.asarray(images), target_layer, targets))

    def _record_gradcams(self, model: Any) -> None:
        from tensortap.explain import record_gradcam

        from .gradcam import find_layer, gradcam_tensors

        for images, target, targets in self._gradcams:
            try:
                acts, grads, _, tgt = gradcam_tensors(model, images, target, targets)
                record_gradcam(self.session, layer_name(find_layer(model, target)), acts, grads, images, tgt)
            except Exception as e:  # noqa: BLE001
                self.session.report_error("could not compute Grad-CAM", e)

    def stop_training(self, reason: str) -> None:
        """Inside fit(): set model.stop_training (Keras stops after the current batch). Elsewhere:
        raise tt.StopTraining at the step boundary."""
        m = self.model
        if self.in_fit and m is not None and hasattr(m, "stop_training"):
            log.warning("tensortap: stopping training: %s", reason)
            m.stop_training = True
            return
        raise StopTraining(reason)

    # ---- custom loops ------------------------------------------------------------------------
    def wrap_tape(self, tape):
        """`with hook.wrap_tape(tf.GradientTape()) as tape:` records gradients, the loss and weights."""
        from .tape import WrappedTape

        return WrappedTape(self, tape)
