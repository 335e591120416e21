"""Keras 3 fit/evaluate/predict capture: weights, real gradients from the compiled train step,
layer outputs (and their gradients), losses and metrics, per mode, for three model styles."""
from __future__ import annotations

from tests.conftest import require

require("tensorflow", "keras")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tensortap as tt  # noqa: E402
import tt_tf_helpers as H  # noqa: E402

TRAIN, EVAL, PREDICT = tt.modes.TRAIN, tt.modes.EVAL, tt.modes.PREDICT
BS = 8
X, Y = H.data(40)          # 5 train batches per epoch
XV, YV = H.data(16, seed=1)  # 2 validation batches per epoch


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory):
    """Sequential model, 2 epochs with validation, then evaluate and predict; save every 2nd step."""
    out = str(tmp_path_factory.mktemp("seq") / "run")
    model = H.compile_sgd(H.sequential())
    hook = tt.Hook(out, include_collections=["weights", "biases", "gradients", "outputs", "losses", "metrics"],
                   save_config=tt.SaveConfig(save_interval=2))
    snaps = H.Snapshots(X, Y, BS)
    model.fit(X, Y, batch_size=BS, epochs=2, shuffle=False, verbose=0, validation_data=(XV, YV),
              callbacks=[snaps, hook.keras_callback()])
    model.evaluate(XV, YV, batch_size=BS, verbose=0, callbacks=[hook.keras_callback()])
    preds = model.predict(XV, batch_size=BS, verbose=0, callbacks=[hook.keras_callback()])
    hook.close()
    return model, snaps.snaps, tt.create_trial(out), preds, hook


def test_train_steps_weights_and_gradients_are_the_steps_own(seq_run):
    model, snaps, trial, _, hook = seq_run
    assert not hook.errors, hook.errors
    assert len(snaps) == 10
    assert trial.steps(mode=TRAIN) == [0, 2, 4, 6, 8]
    for s in trial.steps(mode=TRAIN):
        for v in model.trainable_variables:
            got = trial.tensor(v.path).value(s, mode=TRAIN)
            assert np.array_equal(got, snaps[s]["params"][v.path]), (v.path, s)
            g = trial.tensor(f"gradients/{v.path}").value(s, mode=TRAIN)
            np.testing.assert_allclose(g, snaps[s]["grads"][v.path], rtol=1e-6, atol=1e-7)
        assert np.isclose(float(trial.tensor("loss").value(s, mode=TRAIN)), snaps[s]["loss"], rtol=1e-6)
    assert set(trial.tensor_names(collection="biases")) == {"seq/fc1/bias", "seq/fc2/bias"}
    assert set(trial.tensor_names(collection="weights")) == {"seq/fc1/kernel", "seq/fc2/kernel"}


def test_layer_outputs_from_the_compiled_step(seq_run):
    model, snaps, trial, _, _ = seq_run
    s = 4
    w = trial.tensor("seq/fc1/kernel").value(s, mode=TRAIN)
    b = trial.tensor("seq/fc1/bias").value(s, mode=TRAIN)
    want = np.maximum(snaps[s]["x"] @ w + b, 0)
    got = trial.tensor("seq/fc1/output_0").value(s, mode=TRAIN)
    assert got.shape == (BS, 16)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert trial.tensor("seq/fc2/output_0").value(s, mode=TRAIN).shape == (BS, 4)


def test_modes_eval_and_predict_have_their_own_steps(seq_run):
    model, _, trial, preds, _ = seq_run
    # 2 validation passes of 2 batches + one evaluate of 2 batches = EVAL mode steps 0..5
    assert trial.steps(mode=EVAL) == [0, 2, 4]
    assert trial.steps(mode=PREDICT) == [0]
    # predict mode: the outputs are exactly what predict returned for that batch
    np.testing.assert_allclose(trial.tensor("seq/fc2/output_0").value(0, mode=PREDICT), preds[:BS], rtol=1e-6)
    # eval mode loss: the loss of that validation batch with the weights of the time
    assert "loss" in trial.tensor_names(mode=EVAL, step=0) or trial.tensor("loss").steps(mode=EVAL)
    assert not trial.tensor("gradients/seq/fc1/kernel").steps(mode=EVAL)


def test_metrics_from_logs(seq_run):
    _, _, trial, _, _ = seq_run
    names = set(trial.tensor_names(collection="metrics"))
    assert {"accuracy", "loss_running_mean"} <= names
    acc = trial.tensor("accuracy").value(0, mode=TRAIN)
    assert 0.0 <= float(acc) <= 1.0


def test_unsaved_steps_do_no_work(seq_run):
    """The switches are off outside saved steps and after fit; nothing is written for odd steps."""
    model, _, trial, _, hook = seq_run
    assert not any(hook.adapter.switches.state.values())
    assert all(not bool(v.numpy()) for v in hook.adapter.switches.vars.values())
    for s in (1, 3, 5, 7, 9):
        assert s not in trial.steps(mode=TRAIN)


def test_detach_restores_the_model(seq_run):
    model, _, _, _, hook = seq_run
    for obj in [model, model.optimizer] + list(model.layers):
        assert not any(k in vars(obj) for k in ("call", "fit", "apply", "compute_loss")), obj
    # the model still trains without tensortap
    model.fit(X[:BS], Y[:BS], batch_size=BS, verbose=0)


@pytest.mark.parametrize("style", ["functional", "subclassed"])
def test_register_alone_captures_fit(style, tmp_path):
    """hook.register(model) adds the callback to fit itself; subclassed models call fc1 twice."""
    model = H.compile_sgd(H.functional() if style == "functional" else H.subclassed())
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights", "biases", "gradients", "outputs", "inputs"],
                   save_config=tt.SaveConfig(save_steps=[1]))
    hook.register(model)
    snaps = H.Snapshots(X, Y, BS)
    model.fit(X[:24], Y[:24], batch_size=BS, epochs=1, shuffle=False, verbose=0, callbacks=[snaps])
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps() == [1]
    for v in model.trainable_variables:
        np.testing.assert_allclose(trial.tensor(f"gradients/{v.path}").value(1), snaps.snaps[1]["grads"][v.path],
                                   rtol=1e-6, atol=1e-7)
        assert np.array_equal(trial.tensor(v.path).value(1), snaps.snaps[1]["params"][v.path])
    outs = set(trial.tensor_names(collection="outputs"))
    if style == "subclassed":
        assert {"sub/fc1/output_0", "sub/fc1#1/output_0", "sub/fc2/output_0"} <= outs
        first = trial.tensor("sub/fc1/output_0").value(1)
        second = trial.tensor("sub/fc1#1/output_0").value(1)
        assert first.shape == second.shape == (BS, 8) and not np.array_equal(first, second)
        assert np.array_equal(trial.tensor("sub/fc1#1/input_0").value(1), first)  # 2nd call eats the 1st's output
        assert np.array_equal(trial.tensor("sub/fc1/input_0").value(1), snaps.snaps[1]["x"])
    else:
        assert {"fc1/output_0", "fc2/output_0"} <= outs
        assert np.array_equal(trial.tensor("fc2/input_0").value(1), trial.tensor("fc1/output_0").value(1))


def test_output_gradients_when_asked_and_run_eagerly(tmp_path):
    """A regex collection asks for d loss / d fc1 output; checked in compiled and eager fit."""
    for run_eagerly in (False, True):
        out = str(tmp_path / f"run{int(run_eagerly)}")
        model = H.compile_sgd(H.functional(), run_eagerly=run_eagerly)
        og = tt.Collection("og", include_regex=[r"gradients/fc1/output_0"])
        hook = tt.Hook(out, include_collections=["gradients", og], save_config=tt.SaveConfig(save_steps=[0]))
        hook.register(model)
        x, y = X[:BS], Y[:BS]
        fc1 = model.get_layer("fc1")
        with tf.GradientTape() as tape:
            h = fc1(x)
            tape.watch(h)
            loss = H.LOSS(y, model.get_layer("fc2")(h))
        want = tape.gradient(loss, h).numpy()
        model.fit(x, y, batch_size=BS, epochs=1, shuffle=False, verbose=0)
        hook.close()
        assert not hook.errors, hook.errors
        trial = tt.create_trial(out)
        np.testing.assert_allclose(trial.tensor("gradients/fc1/output_0").value(0), want, rtol=1e-5, atol=1e-7)
        assert "gradients/fc1/kernel" in trial.tensor_names()


def test_stop_training_stops_fit_after_the_current_batch(tmp_path):
    model = H.compile_sgd(H.sequential(seed=1))
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    seen = []

    class Ask(H.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)
            if batch == 2:
                hook.request_stop("test asked")

    model.fit(X, Y, batch_size=BS, epochs=3, shuffle=False, verbose=0, callbacks=[Ask()])
    hook.close()
    assert seen == [0, 1, 2], "Keras checks model.stop_training after each batch: batch 2 is the last"
    assert tt.create_trial(str(tmp_path / "run")).steps() == [0, 1, 2]


def test_train_on_batch_is_a_step(tmp_path):
    model = H.compile_sgd(H.sequential(seed=2, name="tob"))
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    refs = []
    for i in range(3):
        x, y = X[i * BS:(i + 1) * BS], Y[i * BS:(i + 1) * BS]
        refs.append(H.reference_grads(model, x, y))
        model.train_on_batch(x, y)
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps() == [0, 1, 2]
    for s, (loss, grads) in enumerate(refs):
        for name, g in grads.items():
            np.testing.assert_allclose(trial.tensor(f"gradients/{name}").value(s), g, rtol=1e-6, atol=1e-7)
        assert np.isclose(float(trial.tensor("loss").value(s)), loss, rtol=1e-6)


def _fit_step1(model, tmp_path, collections, rtol):
    """Register, fit 2 batches saving step 1, check step 1's gradients and loss; (trial, hook)."""
    hook = tt.Hook(str(tmp_path / "run"), include_collections=collections, save_config=tt.SaveConfig(save_steps=[1]))
    hook.register(model)
    snaps = H.Snapshots(X, Y, BS)
    model.fit(X[:16], Y[:16], batch_size=BS, shuffle=False, verbose=0, callbacks=[snaps])
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))
    for v in model.trainable_variables:
        np.testing.assert_allclose(trial.tensor(f"gradients/{v.path}").value(1), snaps.snaps[1]["grads"][v.path],
                                   rtol=rtol, atol=rtol / 100)
    assert np.isclose(float(trial.tensor("loss").value(1)), snaps.snaps[1]["loss"], rtol=rtol)
    return trial, hook


def test_xla_compiled_step_still_gives_gradients(tmp_path):
    """jit_compile=True: gradients and loss come through the slots; outputs are skipped with one report.
    (XLA fuses differently from the eager reference: float rounding only, hence the looser tolerance.)"""
    model = H.compile_sgd(H.sequential(seed=5, name="xla"), jit_compile=True)
    trial, hook = _fit_step1(model, tmp_path, ["gradients", "losses", "outputs"], rtol=1e-4)
    assert not trial.tensor_names(collection="outputs")
    assert len(hook.errors) == 1 and "XLA" in hook.errors[0]


def test_loss_scale_optimizer_gives_unscaled_gradients(tmp_path):
    """With a LossScaleOptimizer the inner optimizer is tapped: gradients are the unscaled ones."""
    model = H.sequential(seed=6, name="lso")
    model.compile(optimizer=H.keras.optimizers.LossScaleOptimizer(H.keras.optimizers.SGD(0.1)), loss=H.LOSS)
    _, hook = _fit_step1(model, tmp_path, ["gradients", "losses"], rtol=1e-6)
    assert not hook.errors, hook.errors


def test_subclassed_model_built_by_its_first_step_has_step0_weights(tmp_path):
    """No variables exist at step 0's batch begin: they are read inside the step, before the update."""
    model = H.compile_sgd(H.subclassed(seed=7))
    assert not model.weights
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights", "biases"],
                   save_config=tt.SaveConfig(save_steps=[0, 1]))
    snaps = H.Snapshots(X, Y, BS)  # after tensortap's callback: it builds the model eagerly at batch 0
    model.fit(X[:16], Y[:16], batch_size=BS, shuffle=False, verbose=0, callbacks=[hook.keras_callback(), snaps])
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(str(tmp_path / "run"))
    for step in (0, 1):
        for v in model.trainable_variables:
            assert np.array_equal(trial.tensor(v.path).value(step), snaps.snaps[step]["params"][v.path]), (v.path, step)
