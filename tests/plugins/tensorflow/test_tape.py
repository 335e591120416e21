"""Custom training loops: `with hook.wrap_tape(tf.GradientTape()) as tape:`, eager and tf.function."""
from __future__ import annotations

from tests.conftest import require

require("tensorflow", "keras")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tensortap as tt  # noqa: E402
import tt_tf_helpers as H  # noqa: E402

BS = 8
X, Y = H.data(48)


def _loop(hook, model, compiled: bool, steps: int = 6):
    """A plain SGD custom loop; returns per step (params before, grads, loss) taken independently."""
    opt = H.keras.optimizers.SGD(0.1)

    def step(x, y):
        with hook.wrap_tape(tf.GradientTape()) as tape:
            loss = H.LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    fn = tf.function(step) if compiled else step
    refs = []
    for i in range(steps):
        x, y = X[i * BS:(i + 1) * BS], tf.constant(Y[i * BS:(i + 1) * BS])
        params = {v.path: v.numpy().copy() for v in model.trainable_variables}
        loss, grads = H.reference_grads(model, x, y)
        refs.append((params, grads, loss))
        fn(tf.constant(x), y)
    return refs


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_wrapped_tape_records_gradients_weights_loss_and_outputs(compiled, tmp_path):
    model = H.functional(seed=3)
    out = str(tmp_path / "run")
    hook = tt.Hook(out, include_collections=["weights", "biases", "gradients", "losses", "outputs"],
                   save_config=tt.SaveConfig(save_interval=2))
    hook.register(model)
    refs = _loop(hook, model, compiled)
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(out)
    assert trial.steps() == [0, 2, 4]
    for s in trial.steps():
        params, grads, loss = refs[s]
        for name in params:
            assert np.array_equal(trial.tensor(name).value(s), params[name]), (name, s)
            np.testing.assert_allclose(trial.tensor(f"gradients/{name}").value(s), grads[name], rtol=1e-5, atol=1e-7)
        assert np.isclose(float(trial.tensor("loss").value(s)), loss, rtol=1e-6)
        w, b = params["fc1/kernel"], params["fc1/bias"]
        want = np.maximum(X[s * BS:(s + 1) * BS] @ w + b, 0)
        np.testing.assert_allclose(trial.tensor("fc1/output_0").value(s), want, rtol=1e-5, atol=1e-6)
    assert "fc2/output_0" in trial.tensor_names(step=0)


def test_tape_without_register_and_bad_argument(tmp_path):
    """wrap_tape alone (no register): the sources are named by their Keras paths."""
    model = H.sequential(seed=4, name="plain")
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights", "gradients"],
                   save_config=tt.SaveConfig(save_interval=1))
    x, y = X[:BS], Y[:BS]
    with hook.wrap_tape(tf.GradientTape()) as tape:
        loss = H.LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))
    np.testing.assert_array_equal(trial.tensor("gradients/plain/fc1/kernel").value(0), grads[0].numpy())
    assert trial.tensor("plain/fc2/kernel").value(0).shape == (16, 4)
    other = tt.Hook(str(tmp_path / "r2"))
    with pytest.raises(tt.ConfigError, match="GradientTape"):
        other.wrap_tape(object())
    other.close()
