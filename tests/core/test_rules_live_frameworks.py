"""Live rules stop real training in every framework, with the rules in their own process (the
default) and on the rules thread: a learning rate of 0 keeps the loss flat, loss_not_decreasing
fires at step 3, and its stop_training action ends training soon after (PyTorch and Gluon:
tt.StopTraining from the next step; Keras fit(): model.stop_training)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import tensortap as tt

WHERE = ["process", "thread"]
STEPS = 400  # the loop's length; training must stop long before


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs {module} (not installed in this venv)")


@pytest.fixture
def make_hook(run_dir, monkeypatch):
    """make_hook(where): a hook whose live loss_not_decreasing(num_steps=3) stops training, closed
    after the test even when an assertion fails (an unclosed hook leaves its framework patches, e.g.
    the Gluon Trainer's, installed for the tests that follow)."""
    hooks = []

    def make(where):
        monkeypatch.setenv("TENSORTAP_LIVE_RULES", where)
        hook = tt.Hook(run_dir, include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
        hooks.append(hook)
        hook.add_rule(tt.rules.get("loss_not_decreasing")(num_steps=3), action="stop_training")
        return hook

    yield make
    for hook in hooks:
        hook.close()  # safe to call twice


def _check_run(hook, run_dir, stopped_at: int, event: bool = True) -> None:
    hook.close()  # the fixture closes it too, when a test fails before this
    assert 3 < stopped_at < STEPS // 2, stopped_at
    trial = tt.create_trial(run_dir)
    fired = [r["step"] for r in trial.rule_results() if r["rule"] == "loss_not_decreasing" and r["fired"]]
    assert fired and fired[0] == 3, (fired, trial.rule_results()[:8])
    if event:  # Keras: the plugin sets model.stop_training at the batch's end; fit() ends, no next step
        assert any(e["event"] == "stop_requested" for e in trial.events())
    assert not hook.errors, hook.errors


def _data(n=64, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


@pytest.mark.parametrize("where", WHERE)
def test_torch_loop_stops(run_dir, make_hook, where):
    _need("tensortap_torch")
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    hook = make_hook(where)
    hook.register(model)
    x, y = (torch.from_numpy(a) for a in _data())
    steps = 0
    with pytest.raises(tt.StopTraining, match="loss_not_decreasing fired at step 3"):
        for _ in range(STEPS):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            hook.record_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    _check_run(hook, run_dir, steps)


@pytest.mark.parametrize("where", WHERE)
def test_keras_fit_stops(run_dir, make_hook, where):
    _need("tensortap_tensorflow")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(2)])
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.0),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hook = make_hook(where)
    x, y = _data()
    batches = []
    count = tf.keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))
    model.fit(x, y, batch_size=4, epochs=STEPS // 16, shuffle=False, verbose=0,
              callbacks=[hook.keras_callback(), count])  # 16 batches per epoch: STEPS in all
    assert model.stop_training
    _check_run(hook, run_dir, len(batches), event=False)


@pytest.mark.parametrize("where", WHERE)
def test_gluon_loop_stops(run_dir, make_hook, where):
    _need("tensortap_mxnet")
    _need("mxnet")
    import mxnet as mx
    from mxnet import autograd, gluon

    net = gluon.nn.HybridSequential(prefix="mlp_")
    with net.name_scope():
        net.add(gluon.nn.Dense(16, in_units=8, activation="relu"), gluon.nn.Dense(2, in_units=16))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    hook = make_hook(where)
    hook.register(net)
    hook.register_loss(loss_fn)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.0})
    x, y = (mx.nd.array(a) for a in _data())
    steps = 0
    with pytest.raises(tt.StopTraining, match="loss_not_decreasing fired at step 3"):
        for _ in range(STEPS):
            with autograd.record():
                loss = loss_fn(net(x), y).mean()
            loss.backward()
            trainer.step(1)
            steps += 1
    _check_run(hook, run_dir, steps)
