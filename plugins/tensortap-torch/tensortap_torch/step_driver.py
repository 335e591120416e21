"""How `tensortap run` steps a plain PyTorch loop: one TRAIN step per optimizer step, through the
Hook's step-driving API (hook.drive_steps / begin_step / capture_gradients / end_step /
take_stop_request; tensortap.zerocode.update_steps), as an explicit user who knows where the
steps are would write it.

- A TRAIN step is numbered by the count of optimizer steps before it (0, 1, ...). It begins at the
  first training forward of the model after an optimizer step (the model in train mode, gradients
  enabled; its weights are captured then), and every further forward until the optimizer step is
  part of it (gradient accumulation, two views, a forward under torch.no_grad): captured once.
- Just before the optimizer applies the gradients (its step pre-hook; with a closure, once the
  closure has run) the gradients are captured: accumulated, clipped, all-reduced, as applied.
- After the optimizer step the step goes to the writer. A rule's stop request raises
  tt.StopTraining where the next TRAIN step would begin: the iteration of the last optimizer step
  runs to its end (scheduler step, logging, checkpoint) and the script ends cleanly.
- Any other forward (the model in eval mode, or gradients disabled) between optimizer steps is one
  EVAL step, counted by forward passes, as the adapter counts them for an explicit hook.
- The loss, when the script has no nn loss module: the sum of the scalars backward() is called on
  during a step, i.e. the objective whose gradient the optimizer applies.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from tensortap.zerocode.update_steps import UpdateSteps

from .util import eager, is_quiet, unwrap


class StepDriver(UpdateSteps):
    """Drives the run's hook from one model and the optimizer built over its parameters (the step
    logic is tensortap.zerocode.update_steps', shared with the Gluon driver)."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._loss: Optional[torch.Tensor] = None
        self._loss_step = -1          # the hook's global step that self._loss sums over

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, how: str) -> Optional[Any]:
        """Attach the run's hook to `model` and drive its steps from `optimizer`; the hook, or None
        when nothing was attached (session.attach said why)."""
        hook = self.session.attach(model, how)
        if hook is None:
            return None
        self.drive(hook)
        # before the adapter's own pre-hook, which takes a driven step's Grad-CAM from the batch
        pre = unwrap(model).register_forward_pre_hook(eager(self._on_forward), prepend=True)
        before = optimizer.register_step_pre_hook(self._before_optimizer_step)
        after = optimizer.register_step_post_hook(self._after_optimizer_step)
        for handle in (pre, before, after):
            self.session.on_close(handle.remove)
        return hook

    # ---- step boundaries ---------------------------------------------------------------------
    def _on_forward(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        if is_quiet():  # tensortap's own forward passes (Grad-CAM, attention)
            return
        self.forward(module.training and torch.is_grad_enabled())

    def _before_optimizer_step(self, optimizer: Any, args: tuple, kwargs: dict) -> Optional[Tuple[tuple, dict]]:
        """The optimizer's step pre-hook: `args` are step's own, the optimizer first, then the closure."""
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self.before_update()
            return None

        def closure_then_gradients() -> Any:  # the closure computes the gradients: take them after it
            out = closure()
            self.before_update()
            return out

        if "closure" in kwargs:
            return args, dict(kwargs, closure=closure_then_gradients)
        return (args[0], closure_then_gradients) + tuple(args[2:]), kwargs

    def _after_optimizer_step(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self.after_update()

    # ---- the loss ----------------------------------------------------------------------------
    def backward_called(self, value: torch.Tensor) -> None:
        """`value.backward()` was called: with no nn loss module, the step's loss is the sum of these."""
        hook = self.hook
        if hook is None or value.dim() != 0 or not hook.saving:
            return
        total = value.detach()
        if self._loss is not None and self._loss_step == hook.step:
            total = self._loss + total
        self._loss, self._loss_step = total, hook.step
        hook.record_loss(total)
