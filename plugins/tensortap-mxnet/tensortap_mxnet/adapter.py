"""MXNetAdapter: drives a tensortap Hook from a Gluon Block / HybridBlock.

- Step boundary: the registered block's forward pre-hook (one call of the model = one step);
  mode TRAIN when `autograd.is_training()` (inside `autograd.record()`), else EVAL, unless the
  user set one.
- Weights/biases: every entry of `collect_params()`, under its full Gluon name, copied before
  the forward uses them (parameters still waiting for deferred initialisation: right after it).
- Gradients `gradients/<name>`: copied just before a Gluon Trainer updates the model's
  parameters (see trainer.py); without a Trainer, at the next forward or at `hook.close()` if a
  backward produced fresh gradients.
- Layer tensors `<block>/input_<i>`, `<block>/output_<i>`, `attention/<cell>` and output gradients
  `gradients/<block>/output_<i>` are taken by hooks installed only for the forward of a saved
  step that wants them; hybridized trees run imperatively for that one forward (blocks.py).
Everything is copied on the device first (an engine op, ordered before any later write) and turned
into numpy at the end of the step (next forward, or `hook.close()`), so a saved step never makes
the training thread wait for the engine mid-step. On unsaved steps the adapter does a counter
increment and nothing else.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tensortap.adapter import Adapter, Handle
from tensortap.capture import is_quiet
from tensortap.errors import ConfigError
from tensortap.modes import EVAL, TRAIN

from . import trainer as _trainer
from .blocks import Deactivated, flat_arrays, is_symbol, layer_info, layer_names

_IO_PROBES = ("output_0", "output_1", "input_0", "input_1")


def _is_bias(name: str) -> bool:
    return name.endswith("bias") or name.endswith("beta")


def _check_block(obj: Any, what: str) -> None:
    from mxnet.gluon import Block

    if not isinstance(obj, Block):
        raise ConfigError(f"{what} must be a mxnet.gluon.Block (or HybridBlock), got {type(obj).__module__}."
                          f"{type(obj).__name__}")


class MXNetAdapter(Adapter):
    """Gluon capture for tensortap (weights, gradients, layer tensors, losses, BERT attention)."""

    name = "mxnet"

    def __init__(self, session) -> None:
        super().__init__(session)
        self._params: List[Tuple[str, Any]] = []
        self._param_ids: frozenset = frozenset()
        self._layers: Dict[int, Tuple[str, Any]] = {}
        self._grads_step = -1
        self._pending: List[Tuple[str, Any]] = []      # (name, zero leaf) of output gradients (gradtap.py)
        self._staged: List[Tuple[str, Any, str]] = []  # on-device copies, numpy at the step's end
        self._losses: List[Tuple[str, Any]] = []
        self._deferred: List[Tuple[str, Any, str]] = []
        self._undo: List[Callable[[], None]] = []
        self._deact: Optional[Deactivated] = None
        self._calls: Dict[int, int] = {}
        self._tap_calls: Dict[int, int] = {}
        self._loss_calls: Dict[str, int] = {}
        self._att_calls: Dict[int, int] = {}
        self._tokens: Optional[np.ndarray] = None

    # ---- registration ------------------------------------------------------------------------
    def attach(self, model: Any) -> None:
        _check_block(model, "the model")
        self.model = model
        self._refresh()
        pre = model.register_forward_pre_hook(self._pre)
        post = model.register_forward_hook(self._post)
        self.handles += [Handle(pre.detach), Handle(post.detach)]
        _trainer.add_listener(self)
        self.handles.append(Handle(lambda: _trainer.remove_listener(self)))
        self.handles.append(Handle(self._end_forward))

    def collections_changed(self) -> None:
        """Nothing to do: layer taps are chosen from the hook's collections at each saved step."""

    def register_loss(self, loss_obj: Any, name: str) -> None:
        """Record the batch mean of `loss_obj`'s output (a Gluon loss block) each time it runs on a saved step."""
        _check_block(loss_obj, "register_loss needs a Gluon loss block; it")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"loss names must be non-empty strings, got {name!r}")

        def on_loss(block, args, out):
            session = self.session
            if is_quiet() or session is None or session.step < 0 or not session.saving:
                return
            arrays = flat_arrays(out)
            if not arrays or is_symbol(arrays[0]):
                return
            k = self._loss_calls.get(name, 0)
            self._loss_calls[name] = k + 1
            from mxnet import autograd

            with autograd.pause():
                self._losses.append((name if k == 0 else f"{name}#{k}", arrays[0].mean()))

        h = loss_obj.register_forward_hook(on_loss)
        self.handles.append(Handle(h.detach))

    def set_tokens(self, tokens: Sequence) -> None:
        """Token strings of the next batch, stored as attention/tokens beside captured attention."""
        from tensortap.tokens import token_array

        self._tokens = None if tokens is None else token_array(tokens)

    def _refresh(self) -> None:
        self._params = list(self.model.collect_params().items())
        self._param_ids = frozenset(id(p) for _, p in self._params)
        old, self._layers = self._layers, layer_names(self.model)
        session = self.session
        if session is not None and self._layers.keys() != old.keys() and (
                session.may_select(category="inputs") or session.may_select(category="outputs")):
            # what each block is (Activation("relu"), Dense, ...), recorded once: rules find layers by kind
            session.describe_layers(layer_info(n, b) for n, b in self._layers.values())

    # ---- framework facts ---------------------------------------------------------------------
    def named_parameters(self, model: Any) -> Iterator[Tuple[str, Any]]:
        return iter(model.collect_params().items())

    def named_layers(self, model: Any) -> Iterator[Tuple[str, Any]]:
        return iter(layer_names(model).values())

    def is_tensor(self, obj: Any) -> bool:
        return (type(obj).__module__ or "").startswith("mxnet")

    def to_numpy(self, tensor: Any) -> np.ndarray:
        if hasattr(tensor, "list_data"):  # a gluon Parameter
            tensor = tensor.list_data()[0]
        if getattr(tensor, "stype", "default") != "default":
            tensor = tensor.tostype("default")
        return tensor.asnumpy()  # a new array: mxnet copies into it

    # ---- step boundary -----------------------------------------------------------------------
    def _pre(self, block: Any, args: Tuple) -> None:
        if is_quiet():
            return
        session = self.session
        try:
            self._end_forward()
        except Exception as e:  # noqa: BLE001
            session.report_error("mxnet: could not clean up after the previous forward", e)
        from mxnet import autograd

        session.begin_step(TRAIN if autograd.is_training() else EVAL)
        if not session.saving:
            return
        try:
            self._calls.clear()
            self._tap_calls.clear()
            self._loss_calls.clear()
            self._att_calls.clear()
            self._refresh()
            self._capture_params()
            self._start_layer_capture()
        except Exception as e:  # noqa: BLE001
            session.report_error("mxnet: capture at the start of the step failed", e)
            self._end_forward()

    def _post(self, block: Any, args: Tuple, out: Any) -> None:
        if is_quiet():
            return
        session = self.session
        try:
            if session.saving:
                deferred, self._deferred = self._deferred, []
                for name, p, cat in deferred:
                    self._stage(name, p.list_data()[0], cat)
                name = self._layers.get(id(block), (block.name, block))[0]
                if self._io_selected(name):
                    self._capture_io(name, block, args, out, self._calls)
        except Exception as e:  # noqa: BLE001
            session.report_error("mxnet: capture at the end of the forward failed", e)
        finally:
            self._end_forward()

    def finish_step(self) -> None:
        """The Hook hands the step over next: staged copies become numpy; gradients a backward
        produced without a Trainer are taken now."""
        session = self.session
        if session is None or session.step < 0 or not session.saving:
            self._pending, self._staged, self._losses = [], [], []
            return
        if (self._grads_step != session.step and session.mode == TRAIN and session.wants("gradients")
                and self._fresh_gradients()):
            self._capture_grads()
        self._flush()

    def _end_forward(self) -> None:
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()
        if self._deact is not None:
            deact, self._deact = self._deact, None
            deact.restore()

    # ---- parameters and gradients ----------------------------------------------------------------
    def _capture_params(self) -> None:
        session = self.session
        wants = {c: session.wants(c) for c in ("weights", "biases")}
        if not any(wants.values()):
            return
        for name, p in self._params:
            cat = "biases" if _is_bias(name) else "weights"
            if not wants[cat]:
                continue
            if p._data is None:  # deferred initialisation: the forward will create it
                self._deferred.append((name, p, cat))
                continue
            self._stage(name, p.list_data()[0], cat)

    def _fresh_gradients(self) -> bool:
        for _, p in self._params:
            if p.grad_req != "null" and p._data is not None and p.list_data()[0]._fresh_grad:
                return True
        return False

    def _before_trainer_update(self, trainer: Any) -> None:
        """Called by the wrapped Trainer.step/allreduce_grads/update before it touches gradients."""
        session = self.session
        try:
            if (session is None or session.closed or is_quiet() or session.step < 0 or not session.saving
                    or self._grads_step == session.step):
                return
            if not session.wants("gradients"):
                return
            if _trainer.owns_any(trainer, self._param_ids):
                self._capture_grads()
        except Exception as e:  # noqa: BLE001
            session.report_error("mxnet: could not capture gradients before trainer update", e)

    def _capture_grads(self) -> None:
        session = self.session
        self._grads_step = session.step
        if session.wants("gradients"):
            for name, p in self._params:
                if p.grad_req == "null" or p._grad is None:
                    continue
                self._stage(f"gradients/{name}", p.list_grad()[0], "gradients")

    def _stage(self, name: str, array: Any, category: str) -> None:
        """Queue an on-device copy of `array` if a collection active now keeps `name`. The copy is an
        engine op ordered before any later write (e.g. the optimizer's update), so it holds today's
        value; it becomes numpy at the end of the step, when the engine has long computed it: the
        training thread never waits for the engine in the middle of a step."""
        if not self.session.selects(name, category):
            return
        from mxnet import autograd

        with autograd.pause():
            self._staged.append((name, array.copy(), category))

    def _flush(self) -> None:
        """Hand this step's staged copies, output gradients and losses to the session (as numpy)."""
        session = self.session
        staged, self._staged = self._staged, []
        pending, self._pending = self._pending, []
        losses, self._losses = self._losses, []
        if staged:
            staged[-1][1].wait_to_read()  # the last copy queued: once it is done, most others are too
        for name, arr, cat in staged:
            session.capture(name, arr, cat)
        from .gradtap import gradients

        for name, arr in gradients(pending):
            session.capture(name, arr, "gradients")
        for name, value in losses:
            session.record_loss(value.asnumpy().reshape(()), name)  # a scalar, like the other frameworks' losses

    # ---- layer tensors -----------------------------------------------------------------------------
    def _io_selected(self, layer: str) -> bool:
        session = self.session
        if not (session.wants("inputs") or session.wants("outputs")):
            return False
        return any(session.selects(f"{layer}/{p}", "inputs" if p.startswith("input") else "outputs")
                   for p in _IO_PROBES)

    def _tap_selected(self, layer: str) -> bool:
        """Output gradients are taken only for blocks a collection selects by name (regex or tensor
        name), never by the bare "gradients" category: that one means parameter gradients."""
        return any(self.session.selects(f"gradients/{layer}/{p}", "gradients", by_name=True)
                   for p in ("output_0", "output_1"))

    def _start_layer_capture(self) -> None:
        session, model = self.session, self.model
        io = [(n, b) for bid, (n, b) in self._layers.items() if b is not model and self._io_selected(n)]
        taps = ([(n, b) for n, b in self._layers.values() if self._tap_selected(n)]
                if session.wants("gradients") else [])
        cells = []
        if session.wants("attention"):
            from .attention import attention_cells

            cells = [(n, c) for n, c in attention_cells(model) if session.selects(f"attention/{n}", "attention")]
            if cells and self._tokens is not None:
                session.capture("attention/tokens", self._tokens, "attention")
        if not (io or taps or cells):
            return  # the registered block's own tensors come from its forward hook: no imperative run needed
        self._deact = Deactivated(model)
        self._deact.off()
        for name, blk in io:
            h = blk.register_forward_hook(self._io_hook(name))
            self._undo.append(h.detach)
        for name, blk in taps:
            from .gradtap import wrap_forward

            self._undo.append(wrap_forward(blk, name, self._pending, self._counter(blk)))
        for name, cell in cells:
            h = cell.dropout_layer.register_forward_hook(self._attention_hook(name, cell))
            self._undo.append(h.detach)

    def _counter(self, blk: Any) -> Callable[[], int]:
        def next_index() -> int:
            k = self._tap_calls.get(id(blk), 0)
            self._tap_calls[id(blk)] = k + 1
            return k

        return next_index

    def _io_hook(self, name: str):
        def on_forward(block, args, out):
            try:
                self._capture_io(name, block, args, out, self._calls)
            except Exception as e:  # noqa: BLE001
                self.session.report_error(f"mxnet: could not capture {name!r}", e)

        return on_forward

    def _capture_io(self, name: str, block: Any, args: Tuple, out: Any, calls: Dict[int, int]) -> None:
        session = self.session
        ins, outs = flat_arrays(args), flat_arrays(out)
        if any(is_symbol(a) for a in ins + outs):
            return
        k = calls.get(id(block), 0)
        calls[id(block)] = k + 1
        prefix = name if k == 0 else f"{name}#{k}"
        if session.wants("inputs"):
            for i, a in enumerate(ins):
                self._stage(f"{prefix}/input_{i}", a, "inputs")
        if session.wants("outputs"):
            for i, a in enumerate(outs):
                self._stage(f"{prefix}/output_{i}", a, "outputs")

    def _attention_hook(self, name: str, cell: Any):
        from .attention import probabilities

        def on_dropout(block, args, out):
            try:
                if not args or is_symbol(args[0]):
                    return
                k = self._att_calls.get(id(cell), 0)
                self._att_calls[id(cell)] = k + 1
                from mxnet import autograd

                with autograd.pause():
                    probs = probabilities(cell, args[0])
                self._stage(f"attention/{name}" + (f"#{k}" if k else ""), probs, "attention")
            except Exception as e:  # noqa: BLE001
                self.session.report_error(f"mxnet: could not capture attention of {name!r}", e)

        return on_dropout
