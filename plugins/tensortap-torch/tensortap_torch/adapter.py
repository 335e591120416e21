"""TorchAdapter: drives a tensortap Hook from a torch.nn.Module.

- step boundary: a forward pre-hook on the (unwrapped) top-level module calls
  `session.begin_step(TRAIN if model.training else EVAL)`, then captures weights/biases; for modes a
  driver begins itself (`hook.drive_steps`, the trainer integrations) the forward starts no step:
  `start_driven_step` sets the step up and `capture_gradients` takes `.grad` before the optimizer step;
- parameter gradients: `register_post_accumulate_grad_hook` on each parameter (fires once
  `.grad` holds this backward's result, before any optimizer step), registered at the boundary
  of a step that wants gradients and kept while the following steps want them too;
- layer inputs/outputs: forward hooks registered at the boundary of a saved step that wants
  them and removed at the next boundary; gradients of selected outputs: tensor hooks;
- losses: a forward hook on the loss module (`hook.register_loss`), present during saved steps;
- attention: see attention.py; Grad-CAM: see gradcam.py.
Every callback first asks `session.wants(...)`: an unsaved step does no tensor work at all, and runs
the bare model and loss apart from the top-level pre-hook (hooks on a module or tensor cost even
when they return at once: torch's slower call path).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from tensortap.adapter import Adapter, Handle
from tensortap.capture import is_quiet
from tensortap.explain import record_gradcam
from tensortap.layers import LayerInfo
from tensortap.modes import EVAL, TRAIN

from . import gradcam as _gradcam
from .attention import AttentionTap
from .convert import CopyPool, reduce_torch, reduce_work, work
from .reducer import Reducer
from .util import dist_info, eager, tensors, unwrap
from .vector import Held, reduce_vector

LAYER_CATEGORIES = ("inputs", "outputs")


class TorchAdapter(Adapter):
    """The torch plugin's adapter (found by `tt.Hook(...).register(model)`)."""

    name = "torch"
    #: images of a batch that training-time Grad-CAM (collection "feature_maps") explains
    gradcam_max_images: int = 8
    #: where reductions are computed: True on a background thread from snapshots, False on the
    #: training thread, None (default) on the background thread only for tensors on an accelerator
    #: (CPU tensors: less work in all, no snapshot copies and no GIL hand-offs; measured in
    #: benchmarks/overhead_torch.py, docs/torch.md)
    reduce_off_thread: Optional[bool] = None

    def __init__(self, session) -> None:
        super().__init__(session)
        self.root: Optional[nn.Module] = None
        self._calls: Dict[str, int] = {}
        self._feature_layer: Optional[Tuple[str, nn.Module]] = None
        # (module, its forward hook) whose inputs/outputs may be selected
        self._layers: List[Tuple[nn.Module, Any]] = []
        self._step_hooks: List[Any] = []  # forward hooks living for one saved step
        self._grad_params: List[Tuple[str, torch.Tensor]] = []  # the model's parameters, (name, parameter)
        self._grad_handles: Dict[str, Any] = {}  # name -> its gradient hook, present while steps want gradients
        self._loss_hooks: List[Tuple[nn.Module, Any]] = []  # (loss module, its forward hook), added on saved steps
        self._step_args: Optional[tuple] = None
        self._reducer = Reducer()  # reductions of saved steps, computed off the training thread
        self._grads: List[Tuple[str, torch.Tensor, int]] = []  # this backward pass's (name, grad, version)
        self._batch_grads = True  # capture a backward pass's gradients together at its end (not with DDP)
        self._copies = CopyPool()  # host arrays of raw captures, reused once written
        self._first_pass = True  # a driven step's first forward/backward pass (forward-pass tensors come from it)
        self._gradcam_due = False  # a driven step's Grad-CAM waits for its first forward (the batch)

    # ---- Adapter contract ------------------------------------------------------------------
    def attach(self, model: Any) -> None:
        """Install the hooks described in the module docstring on `model` (DDP/compile unwrapped)."""
        root = unwrap(model)
        session = self.session
        fm = session.collection("feature_maps")
        if fm is not None:
            self._feature_layer = _gradcam.choose_layer(root, fm.include_regex)
            fm.categories = ("feature_maps",)  # its regex names a layer, not tensors of other categories
            fm.changed()
        self.root = root
        self._batch_grads = root is model and dist_info()[1] == 1
        self.handles.append(root.register_forward_pre_hook(eager(self._on_step)))
        self._grad_params = list(root.named_parameters())
        self.handles.append(Handle(lambda: self._keep_grad_hooks(False)))
        if self._could_select_layers():
            # the hook functions are made once: wrapping them for torch.compile costs more than the hook
            self._layers = [(m, eager(partial(self._on_layer, name))) for name, m in root.named_modules() if name]
            # what each layer is (nn.ReLU, nn.Tanh, ...), recorded once: rules find layers by kind
            session.describe_layers(LayerInfo.of(name, m) for name, m in root.named_modules() if name)
        self.handles.append(Handle(self._drop_step_hooks))
        self.handles.append(Handle(self._reducer.close))
        if session.may_select(category="attention"):
            tap = AttentionTap(self._on_attention, self._wants_attention, session.report_error)
            self.handles.extend(tap.attach(root))

    def collections_changed(self) -> None:
        """A collection gained regexes after attach: add the layer hooks it may now select (kept idle
        on steps that select nothing, like those installed at attach)."""
        if self.root is not None and not self._layers and self._could_select_layers():
            self._layers = [(m, eager(partial(self._on_layer, name))) for name, m in self.root.named_modules() if name]

    def named_parameters(self, model: Any) -> Iterator[Tuple[str, Any]]:
        return iter(unwrap(model).named_parameters())

    def named_layers(self, model: Any) -> Iterator[Tuple[str, Any]]:
        return ((n, m) for n, m in unwrap(model).named_modules() if n)

    def to_numpy(self, tensor: Any) -> np.ndarray:
        return self._copies.to_numpy(tensor)

    def reduce(self, tensor: Any, names, bins: int) -> Dict[str, np.ndarray]:
        """Torch ops where the tensor lives (no copy of it, one small transfer); agrees with
        tensortap.reductions.reduce_numpy."""
        if not isinstance(tensor, torch.Tensor):
            return super().reduce(tensor, names, bins)
        return reduce_torch(tensor, names, bins)

    def reduce_many(self, tensors, names, bins: int):
        """Snapshots now, reductions later on the reducer thread (see reducer.py): handles the Hook
        resolves before the step goes to the writer. Without a hook (tt.explain): computed here."""
        if self.session is None or not all(isinstance(t, torch.Tensor) for t in tensors):
            return super().reduce_many(tensors, names, bins)
        off = self.reduce_off_thread
        if off is None:
            off = any(t.device.type != "cpu" for t in tensors)
        if not off:
            return reduce_work([work(t) for t in tensors], names, bins)
        return self._reducer.add(tensors, names, bins)

    def hold(self, tensor: Any) -> Any:
        """The tensor itself, not a copy, until its gradient comes (checked unchanged then)."""
        return Held(tensor) if isinstance(tensor, torch.Tensor) else super().hold(tensor)

    def vector_reduce(self, reduction, tensors):
        """A plugin's vector reduction with its torch implementation, on the tensors' device (vector.py)."""
        return reduce_vector(reduction, tensors)

    def finish_step(self) -> None:
        """Start computing this step's reductions (one job, one wake-up of the reducer thread per
        step): they run while the next step trains; the Hook holds the step until they are done."""
        if self._grads:  # a backward pass whose end-of-pass callback never ran (it raised)
            self._flush_grads()
        if self._reducer.has_open:
            self._reducer.submit_open()

    def _on_grad(self, gname: str, grad: torch.Tensor) -> None:
        """A parameter's gradient is final for this backward pass. Without DDP (whose all-reduce
        rewrites gradients in place before the pass ends) the gradients of one pass are captured
        together when it ends, before the user's code runs again: one batch, one snapshot copy."""
        if self._batch_grads and grad is not None:
            if not self._grads:
                try:
                    torch.autograd.Variable._execution_engine.queue_callback(self._flush_grads)
                except Exception:  # noqa: BLE001 - not inside a backward pass after all: capture now
                    self.session.capture(gname, grad, "gradients")
                    return
            self._grads.append((gname, grad, grad._version))
        else:
            self.session.capture(gname, grad, "gradients")

    def _flush_grads(self) -> None:
        grads, self._grads = self._grads, []
        keep = []
        for gname, g, version in grads:
            if g._version != version:  # changed in place later in the same pass (an optimizer step in a hook)
                self.session.report_error(f"the gradient {gname!r} changed in place before the backward pass "
                                          "ended; not saved at this step",
                                          RuntimeError("gradient modified during backward"))
            else:
                keep.append((gname, g, "gradients"))
        if keep:
            self.session.capture_many(keep)

    def is_tensor(self, obj: Any) -> bool:
        return isinstance(obj, torch.Tensor)

    def rank(self) -> int:
        return dist_info()[0]

    def world_size(self) -> int:
        return dist_info()[1]

    def register_loss(self, loss_obj: Any, name: str) -> None:
        """Record the output of the loss module `loss_obj` on every saved step."""
        if not isinstance(loss_obj, nn.Module):
            from tensortap.errors import ConfigError

            raise ConfigError(f"register_loss needs a torch.nn.Module (e.g. nn.CrossEntropyLoss()), got "
                              f"{type(loss_obj).__name__}; for a loss tensor call hook.record_loss(loss)")

        def on_loss(_m, _args, out):
            if not is_quiet() and self.session.saving and isinstance(out, torch.Tensor):
                self.session.record_loss(out, name)

        fn = eager(on_loss)
        if self.root is None:  # no model, no step boundaries to add it at: always there
            self.handles.append(loss_obj.register_forward_hook(fn))
            return
        self._loss_hooks.append((loss_obj, fn))
        if self.session.saving:  # registered in the middle of a saved step: it counts already
            self._step_hooks.append(loss_obj.register_forward_hook(fn))

    # ---- selection helpers -----------------------------------------------------------------
    def _could_select_layers(self) -> bool:
        """Could a step want layer inputs/outputs, or gradients of outputs a collection names?"""
        session = self.session
        return (any(session.may_select(category=c) for c in LAYER_CATEGORIES)
                or session.may_select(category="gradients", by_name=True))

    # ---- callbacks ---------------------------------------------------------------------------
    def _grad_hook(self, p: torch.Tensor, name: str) -> Handle:
        gname = f"gradients/{name}"
        session = self.session
        if hasattr(p, "register_post_accumulate_grad_hook"):
            def on_grad(param):
                if session.wants("gradients") and not is_quiet():
                    self._on_grad(gname, param.grad)
            handle = p.register_post_accumulate_grad_hook(on_grad)
            # run before the user's own hooks, whenever they were registered (an optimizer step
            # fused into backward changes .grad). torch keeps them in a dict by handle id and
            # calls them in the dict's insertion order: re-insert ours first
            hooks = getattr(p, "_post_accumulate_grad_hooks", None)
            if isinstance(hooks, dict) and len(hooks) > 1 and getattr(handle, "id", None) in hooks:
                ordered = [(handle.id, hooks[handle.id])] + [(k, v) for k, v in hooks.items() if k != handle.id]
                hooks.clear()
                hooks.update(ordered)
            return handle

        def on_grad_old(g):  # torch < 2.1: this backward's gradient (no accumulation)
            if session.wants("gradients") and not is_quiet():
                session.capture(gname, g, "gradients")
        return p.register_hook(on_grad_old)

    def start_driven_step(self, first_pass: bool = True) -> None:
        """A step begun by a driver (hook.drive_steps, e.g. a trainer callback): the step-start
        captures now (weights: what the step's forward passes use); gradients come from
        `capture_gradients`, Grad-CAM from the step's first forward. A later pass of the same step
        (gradient accumulation) captures no more layer tensors or attention."""
        self._drop_step_hooks()
        self._first_pass = first_pass
        if first_pass and self.root is not None:
            self._start_step(self.root, None, driven=True)

    def capture_gradients(self) -> int:
        """`.grad` of every parameter as it is now (after accumulation, clipping, DDP's all-reduce)."""
        if is_quiet():
            return 0
        return self.session.capture_many((f"gradients/{name}", p.grad, "gradients")
                                         for name, p in self._grad_params if p.grad is not None)

    def _on_step(self, module: nn.Module, args: tuple) -> None:
        if is_quiet():
            return
        session = self.session
        if session.is_driven(TRAIN if module.training else EVAL):  # a driver begins the steps
            if self._gradcam_due and self._first_pass:
                self._gradcam_due = False
                self._record_gradcam(module, args)
            return
        self._first_pass = True
        self._drop_step_hooks()
        session.begin_step(TRAIN if module.training else EVAL)  # may raise tt.StopTraining (a rule's stop)
        try:
            self._start_step(module, args)
        except Exception as e:  # noqa: BLE001 - a failure here must not stop the user's forward pass
            session.report_error("could not prepare the step's capture", e)

    def _start_step(self, module: nn.Module, args: Optional[tuple], driven: bool = False) -> None:
        """The step's hooks and the captures at its start (weights, Grad-CAM), once it has begun.
        `driven`: begun by a driver, which captures gradients itself; Grad-CAM waits for the batch."""
        session = self.session
        self._calls.clear()
        if self._layers and (session.wants("inputs") or session.wants("outputs")):
            # layer hooks exist only during saved steps: an unsaved step runs the bare model
            self._step_hooks = [m.register_forward_hook(fn) for m, fn in self._layers]
        if self._loss_hooks and session.saving:
            self._step_hooks.extend(m.register_forward_hook(fn) for m, fn in self._loss_hooks)
        self._keep_grad_hooks(session.wants("gradients") and not driven)
        ww, wb = session.wants("weights"), session.wants("biases")
        if ww or wb:
            session.capture_many((name, p, cat) for name, p in module.named_parameters()
                                 for cat in (("biases" if name.endswith("bias") else "weights"),)
                                 if (wb if cat == "biases" else ww))
        want_cam = self._feature_layer is not None and session.wants("feature_maps")
        self._gradcam_due = want_cam and args is None
        if want_cam and args is not None:
            self._record_gradcam(module, args)

    def _keep_grad_hooks(self, wanted: bool) -> None:
        """Parameter gradient hooks exist while steps want gradients: added at the boundary of the
        first such step, removed at the first boundary of a step that does not (no churn when
        every step is saved; an unsaved step's backward runs without them). Only parameters that
        require grad at that boundary get one (a layer frozen or unfrozen during training is
        followed; torch refuses hooks on frozen ones)."""
        handles = self._grad_handles
        if not wanted:
            if handles:
                self._grad_handles = {}
                for h in handles.values():
                    h.remove()
            return
        for name, p in self._grad_params:
            if p.requires_grad and name not in handles:
                try:
                    handles[name] = self._grad_hook(p, name)
                except RuntimeError as e:  # torch would not take the hook: that gradient is not saved
                    self.session.report_error(f"could not watch the gradient of {name!r}", e)

    def _drop_step_hooks(self) -> None:
        while self._step_hooks:
            self._step_hooks.pop().remove()

    def _call_name(self, name: str) -> str:
        k = self._calls.get(name, 0)
        self._calls[name] = k + 1
        return name if k == 0 else f"{name}#{k}"

    def _on_layer(self, name: str, _module: nn.Module, args: tuple, output: Any) -> None:
        session = self.session
        wi, wo = session.wants("inputs"), session.wants("outputs")
        if not (wi or wo) or is_quiet():
            return
        base = self._call_name(name)
        if wi:
            for i, t in enumerate(tensors(args)):
                session.capture(f"{base}/input_{i}", t, "inputs")
        wg = session.wants("gradients") and torch.is_grad_enabled()
        for i, t in enumerate(tensors(output)):
            oname = f"{base}/output_{i}"
            kept = session.capture(oname, t, "outputs") if wo else False
            gname = f"gradients/{oname}"
            # an output's gradient is taken where its output is kept or a collection names it
            # (never for the bare "gradients" collection: that one means parameter gradients)
            if t.requires_grad and ((wg and (kept or session.selects(gname, "gradients", by_name=True))
                                     and session.selects(gname, "gradients"))
                                    or (kept and session.needs_gradient(oname) and torch.is_grad_enabled())):
                try:
                    t.register_hook(partial(self._on_output_grad, gname, session.step))
                except RuntimeError as e:  # e.g. a view modified in place by autograd-unfriendly code
                    session.report_error(f"could not watch the gradient of {oname!r}", e)

    def _on_output_grad(self, gname: str, step: int, grad: torch.Tensor) -> None:
        if self.session.step == step:  # a backward that runs after the next forward began belongs to no step
            self.session.capture(gname, grad, "gradients")

    def _wants_attention(self, name: str) -> bool:
        session = self.session
        return (session.wants("attention") and self._first_pass and not is_quiet()
                and session.selects(f"attention/{name}", "attention"))

    def _on_attention(self, name: str, probs: torch.Tensor) -> None:
        self.session.capture(f"attention/{self._call_name('attention/' + name)[len('attention/'):]}", probs,
                             "attention")

    def _record_gradcam(self, module: nn.Module, args: tuple) -> None:
        """Grad-CAM during training (collection "feature_maps"), on saved steps only: the model as
        the step's forward pass finds it (before that pass updates BatchNorm statistics)."""
        session = self.session
        try:
            lname, layer = self._feature_layer
            few = _gradcam.batch_slice(args, self.gradcam_max_images)
            acts, grads, _, tgt, scores = _gradcam.run(module, few, layer, None)
            record_gradcam(session, lname, acts, grads, _gradcam.images_nhwc(tensors(few)[0]), tgt, scores)
        except Exception as e:  # noqa: BLE001
            session.report_error("could not compute Grad-CAM during training", e)
