"""TransformersCallback: a tensortap Hook driven by the Hugging Face `Trainer`.

One step per optimizer step, numbered as the trainer's `state.global_step` before that step (0, 1, ...):
`on_step_begin` begins it, each further micro-batch of gradient accumulation (`on_substep_end`)
continues it, and `on_pre_optimizer_step` (after clipping, after DDP's all-reduce) captures the
gradients the optimizer then applies. Evaluation forwards (the model in eval mode) are EVAL steps,
`trainer.predict` PREDICT steps; what the trainer logs (`on_log`) is saved as losses / metrics; a
rule's stop action sets `control.should_training_stop`.
"""
from __future__ import annotations

import functools
import logging
import sys
from types import FrameType
from typing import Any, Optional

from transformers import Trainer, TrainerCallback

from tensortap.modes import EVAL, PREDICT, TRAIN

from ..util import eager, unwrap
from .driver import Stopper, TokenFeed, attach_model, guarded, includes, record_logged

log = logging.getLogger("tensortap")


class TransformersCallback(TrainerCallback):
    """`transformers.Trainer(..., callbacks=[TransformersCallback(hook)])`.

    tokenizer: turns each saved step's input_ids into the token strings the attention head view
    shows (default: the trainer's processing_class, when it has `convert_ids_to_tokens`)."""

    def __init__(self, hook: Any, tokenizer: Any = None) -> None:
        self.hook = hook
        self.tokenizer = tokenizer
        self.stopper = Stopper(hook)
        self._feed: Optional[TokenFeed] = None
        self._model: Any = None
        self._token_hook: Any = None
        self._trainer: Optional[Trainer] = None

    # ---- set-up ------------------------------------------------------------------------------
    def on_init_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._attach(model, processing_class)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._attach(model, processing_class)

    def _attach(self, model: Any, processing_class: Any) -> None:
        hook = self.hook
        hook.drive_steps([TRAIN])  # evaluation and prediction forwards still start their own steps
        attach_model(hook, model)
        tok = self.tokenizer if self.tokenizer is not None else processing_class
        if not hasattr(tok, "convert_ids_to_tokens"):
            tok = None
        if model is not None and (model is not self._model or self._feed is None or self._feed.tokenizer is not tok):
            if self._token_hook is not None:
                self._token_hook.remove()
                self._token_hook = None
            self._model, self._feed = model, TokenFeed(hook, tok)
            if tok is not None and includes(hook, "attention"):  # a hook on the model costs: only when useful
                self._token_hook = unwrap(model).register_forward_pre_hook(eager(self._on_forward), with_kwargs=True)
        self._find_trainer()

    @guarded
    def _on_forward(self, module, args, kwargs) -> None:
        if self._feed is not None:
            self._feed.offer(kwargs.get("input_ids", args[0] if args else None))

    def _find_trainer(self) -> None:
        """The Trainer calling us (the frame that runs its callbacks), so that `trainer.predict`
        can run in PREDICT mode; the callback API itself does not say which loop is running."""
        if self._trainer is not None:
            return
        frame: Optional[FrameType] = sys._getframe(1)
        for _ in range(12):
            if frame is None:
                break
            obj = frame.f_locals.get("self")
            if isinstance(obj, Trainer) and any(cb is self for cb in obj.callback_handler.callbacks):
                self._trainer = obj
                self._wrap_predict(obj)
                return
            frame = frame.f_back

    def _wrap_predict(self, trainer: Trainer) -> None:
        predict = trainer.predict
        hook = self.hook

        @functools.wraps(predict)
        def predict_in_predict_mode(*args: Any, **kwargs: Any) -> Any:
            hook.set_mode(PREDICT)
            try:
                return predict(*args, **kwargs)
            finally:
                hook.set_mode(None)
                hook.end_step()

        trainer.predict = predict_in_predict_mode  # this instance only

    # ---- training steps ----------------------------------------------------------------------
    @guarded
    def on_step_begin(self, args, state, control, **kwargs):
        self.hook.begin_step(TRAIN, step=state.global_step)

    @guarded
    def on_substep_end(self, args, state, control, **kwargs):
        self.hook.begin_step(TRAIN, step=state.global_step)  # the step's next micro-batch: same step

    @guarded
    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.hook.capture_gradients()

    @guarded
    def on_step_end(self, args, state, control, **kwargs):
        if self.stopper.at_step_end():
            control.should_training_stop = True

    @guarded
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and self.hook.step >= 0:
            record_logged(self.hook, logs)

    @guarded
    def on_evaluate(self, args, state, control, **kwargs):
        if self.hook.mode == EVAL:
            self.hook.end_step()  # the last evaluation step goes to the writer now

    @guarded
    def on_train_end(self, args, state, control, **kwargs):
        if self.stopper.vote.finish() and self.stopper.reason is None:
            log.warning("tensortap: another process's rule asked to stop at the last step")
        self.hook.end_step()
