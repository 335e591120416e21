"""The Keras callback: step boundaries of fit (TRAIN), evaluate (EVAL) and predict (PREDICT).

on_*_batch_begin starts the step (session.begin_step(mode)), turns on the switches the compiled
step reads (only on saved steps) and saves the weights the coming forward pass will use;
on_*_batch_end reads the gradients/loss the step stored, saves the logs' metrics and hands
the step to the writer (session.end_step()).
"""
from __future__ import annotations

import keras

from tensortap.modes import EVAL, PREDICT, TRAIN


class TensorTapCallback(keras.callbacks.Callback):
    """`model.fit(..., callbacks=[hook.keras_callback()])`."""

    def __init__(self, adapter) -> None:
        super().__init__()
        self.adapter = adapter
        # Not async_safe: batch end must finish (slots read, step handed over) before the next
        # batch begins, so Keras 3 dispatches batch-end callbacks synchronously while this one is in.
        self.async_safe = False

    def set_model(self, model) -> None:
        super().set_model(model)
        if self.adapter.model is not model or not self.adapter._active:
            self.adapter.model = model
            self.adapter.attach(model)

    # ---- run boundaries --------------------------------------------------------------------
    def _begin(self) -> None:
        a = self.adapter
        a.in_fit += 1
        if a.in_fit == 1:
            a.prepare_distributed(self.model)
            if a.ensure_optimizer(self.model):
                a._retrace(self.model)

    def _end(self) -> None:
        a = self.adapter
        a.in_fit = max(0, a.in_fit - 1)
        if a.in_fit == 0:
            a.armed = False
            a.switches.all_off()
            a.session.end_step()

    on_train_begin = on_test_begin = on_predict_begin = lambda self, logs=None: self._begin()
    on_train_end = on_test_end = on_predict_end = lambda self, logs=None: self._end()

    # ---- steps -----------------------------------------------------------------------------
    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.adapter.begin_batch(self.model, TRAIN)

    def on_test_batch_begin(self, batch, logs=None) -> None:
        self.adapter.begin_batch(self.model, EVAL)

    def on_predict_batch_begin(self, batch, logs=None) -> None:
        self.adapter.begin_batch(self.model, PREDICT)

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.adapter.end_batch(self.model, logs)

    on_test_batch_end = on_train_batch_end

    def on_predict_batch_end(self, batch, logs=None) -> None:
        self.adapter.end_batch(self.model, None)  # predict logs hold the outputs, not metrics
