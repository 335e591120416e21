"""Conformance kit: the shared fc1 (8->16, relu) -> fc2 (16->4) model in Keras 3, trained by fit().

The reference is taken by the kit's own callback, which runs before tensortap's at each batch
begin: it copies the variables (what this step's forward will use) and computes the loss and
gradients of the same batch independently with an eager tf.GradientTape. fit() itself runs
its usual tf.function-compiled train step (plain SGD, lr 0.1, no shuffling), so the check
covers the compiled path: tensortap's gradients come out of the compiled step.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from tensortap.testing.conformance import N_HIDDEN, N_IN, N_OUT, ConformanceKit

MODEL = "mlp"


class Kit(ConformanceKit):
    framework = "tensorflow"
    requires = ("tensorflow", "keras")

    def param_names(self) -> Dict[str, str]:
        return {f"{layer}.{p}": f"{MODEL}/{layer}/{'kernel' if p == 'weight' else 'bias'}"
                for layer in ("fc1", "fc2") for p in ("weight", "bias")}

    def output_name(self, layer: str) -> str:
        return f"{MODEL}/{layer}/output_0"

    def make_model(self, seed: int = 0) -> Any:
        import keras

        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((N_IN,)),
                                  keras.layers.Dense(N_HIDDEN, activation="relu", name="fc1"),
                                  keras.layers.Dense(N_OUT, name="fc2")], name=MODEL)
        return model

    def train(self, hook, model: Any, data, lr: float = 0.1) -> List[dict]:
        import keras
        import tensorflow as tf

        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss=loss_fn)
        hook.register(model)
        snaps: List[dict] = []

        class Reference(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                x, y = data[batch]
                params = {v.path: np.array(v.numpy(), copy=True) for v in model.trainable_variables}
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                snaps.append({"params": params, "loss": float(loss.numpy()),
                              "grads": {v.path: np.array(g.numpy(), copy=True)
                                        for v, g in zip(model.trainable_variables, grads)}})

        x = np.concatenate([b[0] for b in data])
        y = np.concatenate([b[1] for b in data])
        model.fit(x, y, batch_size=len(data[0][0]), epochs=1, shuffle=False, verbose=0, callbacks=[Reference()])
        return snaps
