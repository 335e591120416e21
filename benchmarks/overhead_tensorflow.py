"""Step-time overhead of tensortap on a small Keras CNN trained with fit() (TF CPU, 1 thread).

Configurations, each on its own copy of the same model, measured in rounds (each round runs every
configuration once, in a shuffled order, so bursts of load on a shared machine hit all alike);
every run is one fit() of EPOCHS x 10 steps, timed as a whole:

  off            no callback
  sync           a do-nothing callback that overrides on_train_batch_end: Keras 3 then dispatches
                 batch-end callbacks synchronously, as it does with tensortap's (not async_safe)
  idle           hook registered, saving nothing (the cost of an unsaved step)
  every10        weights + gradients every 10 steps
  every1         weights + gradients every step
  reductions1    weights + gradients every step, reductions only (min/max/mean/std/l2)
  tensorboard    keras.callbacks.TensorBoard(histogram_freq=1): weight histograms every epoch (= 10 steps)

Prints, per configuration, the median over >= 5 runs of the process CPU time per step (all
threads of this process: TF's, tensortap's writer; robust to other processes competing for a
shared machine) and of the wall time per step, each with its ratio to "off", and the
interquartile range of the per-round CPU ratios as a noise gauge.
Usage: python benchmarks/overhead_tensorflow.py [--runs 15] [--epochs 1] [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

import tensortap as tt  # noqa: E402

STEPS_PER_EPOCH = 10
CONFIGS = ("off", "sync", "idle", "every10", "every1", "reductions1", "tensorboard")


class SyncNoop(keras.callbacks.Callback):
    """Does nothing, but its overridden on_train_batch_end turns off Keras' async callback dispatch."""

    def on_train_batch_end(self, batch, logs=None):
        pass


def make_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        L.MaxPooling2D(name="pool1"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        L.MaxPooling2D(name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(64, activation="relu", name="fc1"),
        L.Dense(10, name="fc2"),
    ], name="cnn")
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def setup(name: str, root: str):
    """(model, callbacks, hook or None) for one configuration."""
    model = make_model()
    cols = ["weights", "biases", "gradients"]
    hook = None
    if name == "idle":
        hook = tt.Hook(os.path.join(root, name), include_collections=cols,
                       save_config=tt.SaveConfig(save_steps=[10 ** 9]))
    elif name in ("every10", "every1"):
        hook = tt.Hook(os.path.join(root, name), include_collections=cols,
                       save_config=tt.SaveConfig(save_interval=10 if name == "every10" else 1))
    elif name == "reductions1":
        hook = tt.Hook(os.path.join(root, name), include_collections=cols, save_config=tt.SaveConfig(save_interval=1),
                       reduction_config=tt.ReductionConfig(reductions=["min", "max", "mean", "std", "l2"]))
    callbacks = []
    if name == "sync":
        callbacks.append(SyncNoop())
    if hook is not None:
        callbacks.append(hook.keras_callback())
    if name == "tensorboard":
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(root, "tb"), histogram_freq=1))
    return model, callbacks, hook


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    n = STEPS_PER_EPOCH * args.batch
    rng = np.random.default_rng(0)
    x = rng.random((n, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, n)
    with tempfile.TemporaryDirectory() as root:
        setups = {name: setup(name, root) for name in CONFIGS}
        for model, cbs, _ in setups.values():  # warm-up: trace the train step
            model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, callbacks=cbs)
        times = {name: [] for name in CONFIGS}
        cpu = {name: [] for name in CONFIGS}
        order = list(CONFIGS)
        shuffle = np.random.default_rng(1).shuffle
        for _ in range(max(5, args.runs)):
            shuffle(order)
            for name in order:
                model, cbs, _ = setups[name]
                steps = args.epochs * STEPS_PER_EPOCH
                t0, c0 = time.perf_counter(), time.process_time()
                model.fit(x, y, batch_size=args.batch, epochs=args.epochs, verbose=0, callbacks=cbs)
                times[name].append((time.perf_counter() - t0) / steps)
                cpu[name].append((time.process_time() - c0) / steps)
        for _, _, hook in setups.values():
            if hook is not None:
                hook.close()
                assert not hook.errors, hook.errors
        params = setups["off"][0].count_params()
    base = statistics.median(times["off"])
    print(f"Keras CNN {params} params, batch {args.batch}, TF {tf.__version__}, Keras {keras.__version__}, "
          f"1 thread; median of {args.runs} runs x {args.epochs * STEPS_PER_EPOCH} steps")
    cbase = statistics.median(cpu["off"])
    print(f"{'config':<13} {'cpu ms/step':>11} {'cpu ratio':>9} {'IQR per round':>15} {'wall ms/step':>12} "
          f"{'wall ratio':>10}")
    for name in CONFIGS:
        c, w = statistics.median(cpu[name]), statistics.median(times[name])
        q = np.percentile([a / b for a, b in zip(cpu[name], cpu["off"])], [25, 75])
        print(f"{name:<13} {c * 1e3:11.2f} {c / cbase:8.3f}x {q[0]:7.3f}-{q[1]:.3f} {w * 1e3:12.2f} {w / base:9.3f}x")


if __name__ == "__main__":
    main()
