"""How `tensortap run` steps a Gluon loop: one TRAIN step per `trainer.step()` (or
`trainer.update()`, when the loop calls allreduce_grads/update itself) of the gluon.Trainer built
over the model's parameters, through the Hook's step-driving API (tensortap.zerocode.update_steps),
as an explicit user who knows where the steps are would write it.

- A forward of the model inside `autograd.record()` begins the TRAIN step of the coming
  trainer.step(); every further forward until then is part of it (gradient accumulation with
  grad_req="add": k forward/backward passes, then trainer.step). The weights are those of the
  step's first forward; layer tensors and losses come from it.
- Just before trainer.step applies the gradients they are captured: the accumulated ones.
- After trainer.step the step goes to the writer; a rule's stop raises tt.StopTraining at the
  next training forward, so the iteration of the last trainer.step runs to its end.
- A forward outside autograd.record() between trainer steps is one EVAL step.
This module imports mxnet only inside its methods.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

from tensortap.capture import is_quiet
from tensortap.zerocode.update_steps import UpdateSteps

#: the Trainer methods that apply gradients (step = allreduce + update)
UPDATES = ("step", "update")


class StepDriver(UpdateSteps):
    """Drives the run's hook from one Gluon block and the trainer built over its parameters."""

    def attach(self, block: Any, trainer: Any, how: str) -> Optional[Any]:
        """Attach the run's hook to `block` and drive its steps from `trainer`; the hook, or None
        when nothing was attached (session.attach said why)."""

        def register(hook: Any) -> None:
            # registered before the adapter's own pre-hook: the step begins before the adapter sets its capture up
            handle = block.register_forward_pre_hook(self._on_forward)
            self.session.on_close(handle.detach)
            hook.register(block)
            self.drive(hook)

        hook = self.session.attach(block, how, register=register)
        if hook is None:
            return None
        for name in UPDATES:
            self._wrap(trainer, name)
        return hook

    def _on_forward(self, block: Any, args: Tuple[Any, ...]) -> None:
        if is_quiet():  # tensortap's own forward passes (Grad-CAM)
            return
        from mxnet import autograd

        self.forward(autograd.is_recording())

    def _wrap(self, trainer: Any, name: str) -> None:
        """trainer.<name> (on this trainer only) takes the gradients before and ends the step after."""
        original = getattr(trainer, name)
        driver = self

        @functools.wraps(original)
        def update(*args: Any, **kwargs: Any) -> Any:
            driver.before_update()
            out = original(*args, **kwargs)
            driver.after_update()
            return out

        setattr(trainer, name, update)

        def restore() -> None:
            if vars(trainer).get(name) is update:
                delattr(trainer, name)

        self.session.on_close(restore)
