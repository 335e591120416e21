"""Small real Keras models and data shared by the tensortap-tensorflow tests."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import keras

try:  # keep the loaded 2-core machine usable; impossible once TF has started
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

L = keras.layers


def data(n=40, d=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x @ rng.standard_normal((d, k))).argmax(1).astype(np.int64)
    return x, y


def sequential(seed=0, name="seq"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu", name="fc1"),
                             L.Dense(4, name="fc2")], name=name)


def functional(seed=0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((8,), name="x")
    h = L.Dense(16, activation="relu", name="fc1")(i)
    return keras.Model(i, L.Dense(4, name="fc2")(h), name="func")


class Sub(keras.Model):
    """A subclassed model that calls its fc1 twice (shared weights): fc1 and fc1#1 outputs."""

    def __init__(self):
        super().__init__(name="sub")
        self.fc1 = L.Dense(8, activation="relu", name="fc1")
        self.fc2 = L.Dense(4, name="fc2")

    def call(self, x, training=False):
        return self.fc2(self.fc1(self.fc1(x)))


def subclassed(seed=0):
    keras.utils.set_random_seed(seed)
    return Sub()


def compile_sgd(model, lr=0.1, **kw):
    model.compile(optimizer=keras.optimizers.SGD(lr), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **kw)
    return model


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def reference_grads(model, x, y):
    """Loss and gradients of one batch, eagerly, independent of tensortap."""
    with tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return float(loss), {v.path: g.numpy() for v, g in zip(model.trainable_variables, grads)}


class Snapshots(keras.callbacks.Callback):
    """Per train batch: the variables before the step and the reference loss/gradients."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.bs, self.snaps = x, y, batch_size, []

    def on_train_batch_begin(self, batch, logs=None):
        sl = slice(batch * self.bs, (batch + 1) * self.bs)
        loss, grads = reference_grads(self.model, self.x[sl], self.y[sl])  # builds an unbuilt model first
        params = {v.path: v.numpy().copy() for v in self.model.weights}
        self.snaps.append({"params": params, "loss": loss, "grads": grads, "x": self.x[sl]})
