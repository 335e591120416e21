"""`tensortap run` for PyTorch: find the model of an unmodified script and attach the run's hook.

- The model: the torch.nn.Module whose parameters the first optimizer is built from (the module
  among the script's variables at that moment that holds all of the optimizer's parameters, the
  largest if several do; a Hugging Face or Lightning Trainer's model is a candidate too).
- Steps: one TRAIN step per step of that optimizer (step_driver.StepDriver).
- The loss: every nn loss module (torch.nn.modules.loss._Loss) the script makes (not those a
  library makes inside its model's forward) is registered with hook.register_loss (the first as
  "loss", later ones "loss_1", ...); when the script has none, the sum of the scalars backward()
  is called on during a step is recorded as "loss".
- Hugging Face / Lightning Trainers get tensortap_torch.integrations' callbacks, which register
  the trainer's model and drive its steps themselves; nothing else here then touches that model
  (no optimizer hooks, no loss modules, no backward values: the losses are what the trainer logs).
  Without the integrations (or with TENSORTAP_RUN_INTEGRATIONS=0) the plain-loop path above runs.
This module does not import torch at top level (the run's summary reads `looks_for` without it).
"""
from __future__ import annotations

import functools
import inspect
import os
import weakref
from typing import Any, Callable, List, Optional

from tensortap.zerocode.session import Instrumentation, Losses, holder_of, made_by_user, objects_in_frames

#: modules whose frames are not the user's when looking for the model variable
FRAMEWORK_MODULES = ("torch", "tensortap_torch", "transformers", "accelerate", "lightning", "pytorch_lightning",
                     "lightning_fabric")


class TorchInstrumentation(Instrumentation):
    """Patches torch.optim.Optimizer.__init__, nn loss modules, Tensor.backward, and the
    Hugging Face / Lightning Trainers once those are imported."""

    looks_for = (
        "PyTorch: a torch.optim optimizer built over the parameters of a torch.nn.Module (the module is the model; "
        "one step per optimizer.step(); the loss comes from nn loss modules, or from the value backward() is "
        "called on)",
        "Hugging Face transformers.Trainer and Lightning Trainer (their model)",
    )

    def __init__(self, session, framework: str) -> None:
        super().__init__(session, framework)
        from .step_driver import StepDriver

        self.driver = StepDriver(session)
        self.losses = Losses(session)
        self.via_trainer = False  # the run's model is a trainer's, driven by its integration callback
        self._hints: List[Any] = []  # weak references to models a Trainer holds

    def install(self) -> None:
        import torch

        s = self.session
        s.patch(torch.optim.Optimizer, "__init__", self.after("find the model of an optimizer", self._optimizer))
        s.patch(torch.nn.modules.loss._Loss, "__init__", self.after("follow a loss module", self._loss_made))
        s.patch(torch.Tensor, "backward", self._backward)
        s.when_imported("transformers", self._transformers)
        for name in ("lightning", "pytorch_lightning"):
            s.when_imported(name, self._lightning)

    # ---- the plain loop -----------------------------------------------------------------------
    def _optimizer(self, opt: Any, *_args, **_kwargs) -> None:
        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        run_model = self.session.model
        if run_model is not None and holder_of(ids, [run_model], lambda m: m.parameters()) is not None:
            return  # the run's model's own optimizer (a trainer's, or a second one over it): already driven
        model = self.model_of(opt)
        how = f"{type(model).__name__ if model is not None else 'no module'} (the parameters of {type(opt).__name__})"
        if run_model is not None:  # a second optimizer over another module (a GAN's): said once
            self.session.attach(model if model is not None else opt, how)
            return
        if model is None:
            self.session.report("find the model of an optimizer", RuntimeError(
                "no torch.nn.Module among the script's variables holds its parameters; nothing attached"))
            return
        if self.driver.attach(model, opt, how) is not None:
            self.losses.register()

    def _loss_made(self, module: Any, *_args, **_kwargs) -> None:
        """A loss module the script made (not one a library makes inside its model's forward)."""
        if not self.via_trainer and made_by_user(("torch",), FRAMEWORK_MODULES):
            self.losses.made(module)

    def model_of(self, opt: Any) -> Optional[Any]:
        """The module whose parameters `opt` was built from (see the module docstring)."""
        from torch import nn

        ids = {id(p) for g in opt.param_groups for p in g["params"]}
        if not ids:
            return None
        cands = [h() for h in self._hints if h() is not None]
        cands += objects_in_frames(lambda o: isinstance(o, nn.Module), FRAMEWORK_MODULES)
        return holder_of(ids, cands, lambda m: m.parameters())

    def _backward(self, original: Callable) -> Callable:
        inst = self

        @functools.wraps(original)
        def backward(tensor, *args, **kwargs):
            if not inst.via_trainer and not len(inst.losses.registered):
                try:
                    inst.driver.backward_called(tensor)
                except Exception as e:  # noqa: BLE001
                    inst.session.report("record the loss", e)
            return original(tensor, *args, **kwargs)

        return backward

    # ---- trainers ----------------------------------------------------------------------------
    def _transformers(self, module) -> None:
        import transformers

        inst = self
        what = ("TransformersCallback", "transformers.Trainer")

        def make(original: Callable) -> Callable:
            signature = inspect.signature(original)

            @functools.wraps(original)
            def init(trainer, *args, **kwargs):
                model = None
                try:  # the callback joins the user's `callbacks=[...]`, where a user would have put it
                    bound = signature.bind(trainer, *args, **kwargs)
                    model = bound.arguments.get("model")
                    added: List[Any] = []
                    inst._trainer(model, *what, added.append)
                    if added:
                        bound.arguments["callbacks"] = list(bound.arguments.get("callbacks") or []) + added
                        args, kwargs = tuple(bound.args[1:]), dict(bound.kwargs)
                except Exception as e:  # noqa: BLE001
                    inst.session.report("could not instrument a transformers.Trainer", e)
                out = original(trainer, *args, **kwargs)
                if model is None:  # made by model_init: it exists only now
                    try:
                        inst._trainer(trainer.model, *what, trainer.add_callback)
                    except Exception as e:  # noqa: BLE001
                        inst.session.report("could not instrument a transformers.Trainer", e)
                return out
            return init

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
                    inst._trainer(model, "LightningCallback", "lightning.Trainer", trainer.callbacks.append)
                except Exception as e:  # noqa: BLE001
                    inst.session.report("instrument a Lightning Trainer", e)
                return original(trainer, model, *args, **kwargs)
            return fit

        self.session.patch(trainer_cls, "fit", make)

    def _trainer(self, model: Any, callback: str, what: str, add: Callable[[Any], None]) -> None:
        """With tensortap_torch.integrations: its callback, added to the trainer. Without it: the
        plain-loop path (the trainer's model is the candidate its optimizer is matched with)."""
        if model is None:
            return
        cls = integration_callback(callback)
        if cls is None:
            self._hints.append(weakref.ref(model))
            return

        def register(hook: Any) -> None:  # the callback registers the model and drives the steps
            add(cls(hook))
            self.via_trainer = True

        self.session.attach(model, f"{type(model).__name__} ({what}, {callback})", register=register)


def integration_callback(name: str) -> Optional[type]:
    """tensortap_torch.integrations.<name>, or None where that module (or the name) does not exist,
    or TENSORTAP_RUN_INTEGRATIONS=0 asks for the plain-loop path."""
    if os.environ.get("TENSORTAP_RUN_INTEGRATIONS", "1").strip() in ("0", "false", "no", "off"):
        return None
    try:
        from . import integrations  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(integrations, name, None)
