"""LightningCallback: a tensortap Hook driven by the Lightning `Trainer`.

One step per optimizer step, numbered as `trainer.global_step` before it: `on_train_batch_start`
begins it (the next micro-batches of gradient accumulation continue it); the gradients are captured
once the optimizer is about to apply them (after Lightning's gradient clipping, which runs in
`configure_gradient_clipping`; with manual optimization at `on_before_optimizer_step`). Validation
and test batches are EVAL steps, prediction batches PREDICT steps; the sanity-check validation counts
no step and saves nothing. Values logged with `self.log` / `self.log_dict` are saved as losses /
metrics when logged; a rule's stop action sets `trainer.should_stop`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Mapping, Optional, Set

from lightning.pytorch import Callback, LightningModule, Trainer

from tensortap.modes import EVAL, PREDICT, TRAIN, ModeKeys

from .driver import Stopper, TokenFeed, attach_model, guarded, record_logged

def _is_metric_object(value: Any) -> bool:
    """A torchmetrics Metric (its value is computed at the epoch's end, not when logged)."""
    return callable(getattr(value, "compute", None)) and callable(getattr(value, "update", None))


class LightningCallback(Callback):
    """`lightning.Trainer(..., callbacks=[LightningCallback(hook)])`.

    tokenizer: turns the input_ids of a batch (a mapping with "input_ids") into the token strings
    the attention head view shows."""

    def __init__(self, hook: Any, tokenizer: Any = None) -> None:
        self.hook = hook
        self.stopper = Stopper(hook)
        self.feed = TokenFeed(hook, tokenizer)
        self._stepped = False
        self._module: Optional[LightningModule] = None
        self._restore: List[Callable[[], None]] = []
        self._metric_names: Dict[ModeKeys, Set[str]] = {}

    # ---- set-up ------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.hook.drive_steps()  # every mode: Lightning says where each batch starts
        attach_model(self.hook, pl_module)
        if pl_module is not self._module:
            self._unwrap()
            self._module = pl_module
            self._wrap(pl_module, "log", self._after_log)
            self._wrap(pl_module, "configure_gradient_clipping", self._after_clipping)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.stopper.vote.finish()
        self.hook.end_step()
        self._unwrap()
        self._module = None

    def _wrap(self, module: LightningModule, name: str, after: Callable[..., None]) -> None:
        """Call `after(*args, **kwargs)` (a guarded method) once the module's own `name` method has
        run (an instance attribute over the method, removed at teardown)."""
        inner = getattr(module, name)

        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            after(*args, **kwargs)
            return out

        setattr(module, name, wrapper)

        def restore() -> None:
            if module.__dict__.get(name) is wrapper:
                delattr(module, name)

        self._restore.append(restore)

    def _unwrap(self) -> None:
        while self._restore:
            self._restore.pop()()

    # ---- what the module logs ----------------------------------------------------------------
    @guarded
    def _after_log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        module = self._module
        trainer = module.trainer if module is not None else None
        if trainer is None or trainer.sanity_checking or self.hook.step < 0:
            return
        if _is_metric_object(value):
            self._metric_names.setdefault(self.hook.mode, set()).add(name)
        else:
            record_logged(self.hook, {name: value})

    def _record_metric_objects(self, trainer: Trainer, mode: ModeKeys) -> None:
        """torchmetrics objects logged in `mode`: their epoch values, now computed."""
        names = self._metric_names.pop(mode, set())
        if names and self.hook.step >= 0:
            values: Mapping[str, Any] = trainer.callback_metrics
            record_logged(self.hook, {n: values[n] for n in names if n in values})

    # ---- training steps ----------------------------------------------------------------------
    @guarded
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.hook.begin_step(TRAIN, step=trainer.global_step)  # the same number again: the next micro-batch
        if not self._stepped:
            self._tokens(batch)

    @guarded
    def _after_clipping(self, *args: Any, **kwargs: Any) -> None:
        self.hook.capture_gradients()
        self._stepped = True

    @guarded
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if not pl_module.automatic_optimization:  # no clipping hook runs: the gradients are final now
            self._after_clipping()

    @guarded
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._stepped:  # the optimizer stepped: the step is complete
            self._stepped = False
            if self.stopper.at_step_end():
                trainer.should_stop = True

    @guarded
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record_metric_objects(trainer, TRAIN)

    # ---- evaluation and prediction -----------------------------------------------------------
    @guarded
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.hook.end_step()  # between steps: the sanity check's batches count no step, save nothing

    @guarded
    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._begin(EVAL, batch)

    @guarded
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._end(trainer, EVAL)

    @guarded
    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        self._begin(EVAL, batch)

    @guarded
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, EVAL)

    @guarded
    def on_predict_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        self._begin(PREDICT, batch)

    @guarded
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, PREDICT)

    def _begin(self, mode: ModeKeys, batch: Any) -> None:
        """An evaluation or prediction batch is one step of `mode`."""
        self.hook.begin_step(mode)
        self._tokens(batch)

    def _end(self, trainer: Trainer, mode: ModeKeys) -> None:
        """The loop ended: its torchmetrics values, then the last step to the writer (between steps)."""
        self._record_metric_objects(trainer, mode)
        self.hook.end_step()

    def _tokens(self, batch: Any) -> None:
        if isinstance(batch, Mapping):
            self.feed.offer(batch.get("input_ids"))
