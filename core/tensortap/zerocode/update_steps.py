"""One TRAIN step per optimizer update, for `tensortap run`'s step drivers (torch: optimizer.step(),
Gluon: trainer.step()); framework-free. It drives the run's hook through its step-driving API
(hook.drive_steps / begin_step(step=) / capture_gradients / end_step / take_stop_request), as a
user who knows where the steps are would write it. A framework plugin's driver tells it three
things: a forward pass of the model (training or not), the moment just before the optimizer
applies the gradients, and the moment after.

- A TRAIN step is numbered by the count of updates before it (0, 1, ...). It begins at the first
  training forward after an update, and every further forward until the next update is part of it
  (gradient accumulation, two views, a forward without gradients): `begin_step(TRAIN, step=n)`
  again, which the adapter takes as another pass of the same step.
- Just before the update the gradients are captured (accumulated, clipped: what is applied); a
  step no forward began (a loop calling the model's layers directly) begins there.
- After the update the step goes to the writer. A rule's stop request raises tt.StopTraining
  where the next TRAIN step would begin, so the iteration of the last update runs to its end.
- Any other forward between updates is one EVAL step, counted by forward passes.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..errors import StopTraining
from ..modes import EVAL, TRAIN


class UpdateSteps:
    """The step boundaries of one model trained by one optimizer, on the run session's hook."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.hook: Any = None
        self.updates = 0     # optimizer updates taken: the number of the next TRAIN step
        self.open = False    # a TRAIN step began since the last update

    def drive(self, hook: Any) -> None:
        """Drive `hook`'s steps from now on (every mode: its adapter starts no step of its own)."""
        hook.drive_steps()
        self.hook = hook

    def forward(self, training: bool) -> None:
        """A forward pass of the model begins; `training`: gradients are being recorded for an update."""
        if self.hook is None:
            return
        if self.open or training:
            self.train_step()
        else:
            self.guard("begin an evaluation step", lambda: self.hook.begin_step(EVAL))

    def train_step(self) -> None:
        """Begin the TRAIN step of the coming update, or continue it (another pass of it). A stop
        request is taken here, where a new step would begin."""
        if not self.open:
            reason = self.hook.take_stop_request()
            if reason is not None:
                raise StopTraining(reason)
            self.open = True
        self.guard("begin a training step", lambda: self.hook.begin_step(TRAIN, step=self.updates))

    def before_update(self) -> None:
        """The optimizer is about to apply the gradients: into the step (begun now if no training
        forward began it)."""
        if self.hook is None:
            return
        if not self.open:
            self.train_step()
        self.guard("capture the gradients", self.hook.capture_gradients)

    def after_update(self) -> None:
        """The optimizer applied the gradients: the step goes to the writer."""
        if self.hook is None:
            return
        self.updates += 1
        self.open = False
        self.guard("hand the step to the writer", self.hook.end_step)

    def guard(self, what: str, fn: Callable[[], Any]) -> Optional[Any]:
        """A failure inside tensortap is reported once and the script goes on."""
        try:
            return fn()
        except StopTraining:
            raise
        except Exception as e:  # noqa: BLE001
            self.session.report(f"could not {what}", e)
            return None
