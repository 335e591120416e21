"""tf.distribute.MirroredStrategy over 2 logical CPU devices: per-replica gradients and loss.

Logical devices must be configured before TensorFlow initialises, so the training runs in a
fresh interpreter; this process only reads the run."""
from __future__ import annotations

from tests.conftest import require

require("tensorflow", "keras")

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402

import tensortap as tt  # noqa: E402

SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras
    import tensortap as tt

    out = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    y = rng.integers(0, 4, 32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc1"),
                                  keras.layers.Dense(4, name="fc2")], name="mir")
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    refs = {}

    class Ref(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            xb, yb = x[batch * 8:(batch + 1) * 8], y[batch * 8:(batch + 1) * 8]
            halves = []
            for part in (slice(0, 4), slice(4, 8)):
                with tf.GradientTape() as tape:
                    loss = loss_fn(yb[part], model(xb[part], training=True)) / 2
                halves.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
            refs[batch] = halves

    hook = tt.Hook(out, include_collections=["weights", "gradients", "losses", "outputs"],
                   save_config=tt.SaveConfig(save_interval=2))
    hook.register(model)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[Ref()])
    hook.close()
    assert not hook.errors, hook.errors
    names = [v.path for v in model.trainable_variables]
    np.savez(out + "-ref.npz", **{f"{b}:{r}:{n}": refs[b][r][i] for b in refs for r in (0, 1)
                                  for i, n in enumerate(names)})
    print("OK", strategy.num_replicas_in_sync)
''')


def test_mirrored_strategy_records_each_replica(tmp_path):
    out = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, out], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "OK 2" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
    ref = np.load(out + "-ref.npz")
    trial = tt.create_trial(out)
    assert trial.steps() == [0, 2]
    for step in trial.steps():
        for name in ("mir/fc1/kernel", "mir/fc1/bias", "mir/fc2/kernel", "mir/fc2/bias"):
            r0 = trial.tensor(f"replica_0/gradients/{name}").value(step)
            r1 = trial.tensor(f"replica_1/gradients/{name}").value(step)
            # each replica saw its half of the batch; its gradient is of its share of the loss
            np.testing.assert_allclose(r0, ref[f"{step}:0:{name}"], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(r1, ref[f"{step}:1:{name}"], rtol=1e-5, atol=1e-7)
            # the unprefixed gradient is what the optimizer applied: the sum over replicas
            assert np.array_equal(trial.tensor(f"gradients/{name}").value(step), r0 + r1)
        assert trial.tensor("replica_1/mir/fc1/output_0").value(step).shape == (4, 16)
        l0, l1 = (float(trial.tensor(f"replica_{i}/loss").value(step)) for i in (0, 1))
        assert np.isclose(float(trial.tensor("loss").value(step)), l0 + l1)
