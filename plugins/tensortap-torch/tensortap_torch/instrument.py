"""`tensortap run` for PyTorch: find the model of an unmodified script and attach the run's hook.

- The model: the torch.nn.Module whose parameters the first optimizer is built from (the module
  among the script's variables at that moment that holds all of the optimizer's parameters, the
  largest if several do; a Hugging Face Trainer's model is a candidate too).
- The loss: every nn loss module (torch.nn.modules.loss._Loss) is registered with
  hook.register_loss (the first as "loss", later ones "loss_1", ...); when the script has none,
  the scalar that backward() is called on is recorded as "loss".
- Steps: see StepDriver. Hugging Face / Lightning Trainers get tensortap_torch.integrations'
  callbacks when that module exists, otherwise the plain-loop path above.
This module does not import torch at top level (the run's summary reads `looks_for` without it).
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, List, Optional

from tensortap.zerocode.session import Instrumentation, objects_in_frames

#: modules whose frames are not the user's when looking for the model variable
FRAMEWORK_MODULES = ("torch", "tensortap_torch", "transformers", "accelerate", "lightning", "pytorch_lightning",
                     "lightning_fabric")


class StepDriver:
    """Where the plain loop's steps begin: at each forward pass of the model, exactly as
    `tt.Hook(...).register(model)` gives (the adapter's forward pre-hook), so a script run under
    `tensortap run` saves the same steps as the same script with an explicit hook. This is the one
    place to move the boundaries to optimizer.step() (tensortap_torch.integrations' step API)."""

    def __init__(self, session) -> None:
        self.session = session

    def attach(self, model: Any, how: str):
        return self.session.attach(model, how)


class TorchInstrumentation(Instrumentation):
    """Patches torch.optim.Optimizer.__init__, nn loss modules, Tensor.backward, and the
    Hugging Face / Lightning Trainers once those are imported."""

    looks_for = (
        "PyTorch: a torch.optim optimizer built over the parameters of a torch.nn.Module (the module is the model; "
        "steps begin at its forward pass; the loss comes from nn loss modules, or from the value backward() is "
        "called on)",
        "Hugging Face transformers.Trainer and Lightning Trainer (their model)",
    )

    def __init__(self, session, framework: str) -> None:
        super().__init__(session, framework)
        self.driver = StepDriver(session)
        self.losses: "weakref.WeakSet" = weakref.WeakSet()
        self._loss_order: List[Any] = []  # weak references, in creation order
        self._registered: "weakref.WeakSet" = weakref.WeakSet()
        self._hints: List[Any] = []  # weak references to models a Trainer holds

    def install(self) -> None:
        import torch

        s = self.session
        s.patch(torch.optim.Optimizer, "__init__", self._optimizer_init)
        s.patch(torch.nn.modules.loss._Loss, "__init__", self._loss_init)
        s.patch(torch.Tensor, "backward", self._backward)
        s.when_imported("transformers", self._transformers)
        for name in ("lightning", "pytorch_lightning"):
            s.when_imported(name, self._lightning)

    # ---- the plain loop -----------------------------------------------------------------------
    def _optimizer_init(self, original: Callable) -> Callable:
        inst = self

        @functools.wraps(original)
        def __init__(opt, *args, **kwargs):
            original(opt, *args, **kwargs)
            try:
                inst._found_optimizer(opt)
            except Exception as e:  # noqa: BLE001 - the user's optimizer is made whatever happens here
                inst.session.report("could not find the model of an optimizer", e)

        return __init__

    def _found_optimizer(self, opt: Any) -> None:
        if self.session.model is not None or self.session.disabled:
            if self.session.model is not None:
                self._check_same_model(opt)
            return
        model = self.model_of(opt)
        if model is None:
            self.session.report("an optimizer was built", RuntimeError(
                "no torch.nn.Module among the script's variables holds its parameters; nothing attached"))
            return
        hook = self.driver.attach(model, f"{type(model).__name__} (the parameters of {type(opt).__name__})")
        if hook is not None:
            self._register_losses(hook)

    def _check_same_model(self, opt: Any) -> None:
        """A second optimizer (a GAN's discriminator, say) over another module: said once."""
        from torch import nn

        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        model = self.session.model
        if isinstance(model, nn.Module) and not ids <= {id(p) for p in model.parameters()}:
            other = self.model_of(opt)
            name = type(other).__name__ if other is not None else "other parameters"
            self.session.attach(other if other is not None else opt, f"{name} (the parameters of {type(opt).__name__})")

    def model_of(self, opt: Any) -> Optional[Any]:
        """The module whose parameters `opt` was built from (see the module docstring)."""
        from torch import nn

        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        if not ids:
            return None
        cands = [h() for h in self._hints if h() is not None]
        cands += objects_in_frames(lambda o: isinstance(o, nn.Module), FRAMEWORK_MODULES)
        best, best_n = None, -1
        for m in cands:
            pids = {id(p) for p in m.parameters()}
            if ids <= pids and len(pids) > best_n:
                best, best_n = m, len(pids)
        return best

    def _loss_init(self, original: Callable) -> Callable:
        inst = self

        @functools.wraps(original)
        def __init__(module, *args, **kwargs):
            original(module, *args, **kwargs)
            try:
                inst._loss_order.append(weakref.ref(module))
                hook = inst.session.hook
                if hook is not None and inst.session.model is not None:
                    inst._register_losses(hook)
            except Exception as e:  # noqa: BLE001
                inst.session.report("could not follow a loss module", e)

        return __init__

    def _register_losses(self, hook) -> None:
        alive = [m for m in (r() for r in self._loss_order) if m is not None]
        for m in alive:
            if m in self._registered:
                continue
            k = len(self._registered)
            self._registered.add(m)
            hook.register_loss(m, "loss" if k == 0 else f"loss_{k}")

    def _backward(self, original: Callable) -> Callable:
        inst = self

        @functools.wraps(original)
        def backward(tensor, *args, **kwargs):
            hook = inst.session.hook
            if hook is not None and not len(inst._registered) and tensor.dim() == 0:
                try:
                    hook.record_loss(tensor.detach())
                except Exception as e:  # noqa: BLE001
                    inst.session.report("could not record the loss", e)
            return original(tensor, *args, **kwargs)

        return backward

    # ---- trainers ----------------------------------------------------------------------------
    def _transformers(self, module) -> None:
        import transformers

        inst = self

        def make(original: Callable) -> Callable:
            @functools.wraps(original)
            def __init__(trainer, *args, **kwargs):
                original(trainer, *args, **kwargs)
                try:
                    inst._trainer_made(trainer, "TransformersCallback", "transformers.Trainer",
                                       lambda cb: trainer.add_callback(cb))
                except Exception as e:  # noqa: BLE001
                    inst.session.report("could not instrument a transformers.Trainer", e)
            return __init__

        self.session.patch(transformers.Trainer, "__init__", make)

    def _lightning(self, module) -> None:
        trainer_cls = getattr(getattr(module, "pytorch", module), "Trainer", None)
        if trainer_cls is None:
            return
        inst = self

        def make(original: Callable) -> Callable:
            @functools.wraps(original)
            def fit(trainer, model, *args, **kwargs):
                try:
                    inst._trainer_made(trainer, "LightningCallback", "lightning.Trainer",
                                       lambda cb: trainer.callbacks.append(cb), model)
                except Exception as e:  # noqa: BLE001
                    inst.session.report("could not instrument a Lightning Trainer", e)
                return original(trainer, model, *args, **kwargs)
            return fit

        self.session.patch(trainer_cls, "fit", make)

    def _trainer_made(self, trainer: Any, callback: str, what: str, add: Callable[[Any], None],
                      model: Any = None) -> None:
        """With tensortap_torch.integrations: its callback, added to the trainer. Without it: the
        plain-loop path (the trainer's model is the candidate its optimizer is matched with)."""
        model = model if model is not None else getattr(trainer, "model", None)
        if model is None:
            return
        cls = integration_callback(callback)
        if cls is None:
            self._hints.append(weakref.ref(model))
            return
        hook = self.session.attach(model, f"{type(model).__name__} ({what}, {callback})",
                                   register=lambda hook: add(cls(hook)))
        if hook is not None:
            self._register_losses(hook)


def integration_callback(name: str) -> Optional[type]:
    """tensortap_torch.integrations.<name>, or None where that module (or the name) does not exist."""
    try:
        from . import integrations  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(integrations, name, None)
