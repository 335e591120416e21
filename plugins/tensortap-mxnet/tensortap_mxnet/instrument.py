"""`tensortap run` for Gluon: the model is the Block whose parameters a gluon.Trainer is built
over (the block among the script's variables holding all of them, the largest if several do);
every gluon.loss.Loss block is registered with hook.register_loss (the first as "loss"). Steps
begin at the block's forward, exactly as `tt.Hook(...).register(block)` gives.
This module does not import mxnet at top level."""
from __future__ import annotations

from typing import Any, Optional

from tensortap.zerocode.session import Instrumentation, Losses, holder_of, objects_in_frames

FRAMEWORK_MODULES = ("mxnet", "gluonnlp", "tensortap_mxnet")


class GluonInstrumentation(Instrumentation):
    """Patches gluon.Trainer.__init__ and gluon.loss.Loss.__init__."""

    looks_for = ("MXNet/Gluon: a gluon.Trainer built over the parameters of a Block (the block is the model; "
                 "steps begin at its forward pass; the loss comes from gluon.loss blocks)",)

    def __init__(self, session, framework: str) -> None:
        super().__init__(session, framework)
        self.losses = Losses(session)

    def install(self) -> None:
        from mxnet import gluon

        self.session.patch(gluon.Trainer, "__init__", self.after("find the model of a gluon.Trainer", self._trainer))
        self.session.patch(gluon.loss.Loss, "__init__", self.after("follow a loss block", self.losses.made))

    def _trainer(self, trainer: Any, *_args, **_kwargs) -> None:
        block = self.block_of(trainer)
        if block is None:
            self.session.report("find the model of a gluon.Trainer", RuntimeError(
                "no gluon Block among the script's variables holds its parameters; nothing attached"))
            return
        if self.session.attach(block, f"{type(block).__name__} (the parameters of gluon.Trainer)") is not None:
            self.losses.register()

    def block_of(self, trainer: Any) -> Optional[Any]:
        from mxnet.gluon import Block

        ids = {id(p) for p in getattr(trainer, "_params", [])}
        if not ids:
            return None
        return holder_of(ids, objects_in_frames(lambda o: isinstance(o, Block), FRAMEWORK_MODULES),
                         lambda b: b.collect_params().values())
