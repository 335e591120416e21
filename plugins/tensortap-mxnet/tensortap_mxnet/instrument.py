"""`tensortap run` for Gluon: the model is the Block whose parameters a gluon.Trainer is built
over (the block among the script's variables holding all of them, the largest if several do);
every gluon.loss.Loss block is registered with hook.register_loss (the first as "loss"). Steps
begin at the block's forward, exactly as `tt.Hook(...).register(block)` gives.
This module does not import mxnet at top level."""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, List, Optional

from tensortap.zerocode.session import Instrumentation, objects_in_frames

FRAMEWORK_MODULES = ("mxnet", "gluonnlp", "tensortap_mxnet")


class GluonInstrumentation(Instrumentation):
    """Patches gluon.Trainer.__init__ and gluon.loss.Loss.__init__."""

    looks_for = ("MXNet/Gluon: a gluon.Trainer built over the parameters of a Block (the block is the model; "
                 "steps begin at its forward pass; the loss comes from gluon.loss blocks)",)

    def __init__(self, session, framework: str) -> None:
        super().__init__(session, framework)
        self._losses: List[Any] = []  # weak references, in creation order
        self._registered: "weakref.WeakSet" = weakref.WeakSet()

    def install(self) -> None:
        from mxnet import gluon

        self.session.patch(gluon.Trainer, "__init__", self._trainer_init)
        self.session.patch(gluon.loss.Loss, "__init__", self._loss_init)

    def _trainer_init(self, original: Callable) -> Callable:
        inst = self

        @functools.wraps(original)
        def __init__(trainer, *args, **kwargs):
            original(trainer, *args, **kwargs)
            try:
                block = inst.block_of(trainer)
                if block is None:
                    inst.session.report("a gluon.Trainer was built", RuntimeError(
                        "no gluon Block among the script's variables holds its parameters; nothing attached"))
                    return
                hook = inst.session.attach(block, f"{type(block).__name__} (the parameters of gluon.Trainer)")
                if hook is not None:
                    inst._register_losses(hook)
            except Exception as e:  # noqa: BLE001 - the user's trainer is made whatever happens here
                inst.session.report("could not find the model of a gluon.Trainer", e)

        return __init__

    def block_of(self, trainer: Any) -> Optional[Any]:
        from mxnet.gluon import Block

        ids = {id(p) for p in getattr(trainer, "_params", [])}
        if not ids:
            return None
        best, best_n = None, -1
        for b in objects_in_frames(lambda o: isinstance(o, Block), FRAMEWORK_MODULES):
            pids = {id(p) for p in b.collect_params().values()}
            if ids <= pids and len(pids) > best_n:
                best, best_n = b, len(pids)
        return best

    def _loss_init(self, original: Callable) -> Callable:
        inst = self

        @functools.wraps(original)
        def __init__(block, *args, **kwargs):
            original(block, *args, **kwargs)
            try:
                inst._losses.append(weakref.ref(block))
                if inst.session.hook is not None and inst.session.model is not None:
                    inst._register_losses(inst.session.hook)
            except Exception as e:  # noqa: BLE001
                inst.session.report("could not follow a loss block", e)

        return __init__

    def _register_losses(self, hook) -> None:
        for b in [r() for r in self._losses]:
            if b is None or b in self._registered:
                continue
            k = len(self._registered)
            self._registered.add(b)
            hook.register_loss(b, "loss" if k == 0 else f"loss_{k}")
