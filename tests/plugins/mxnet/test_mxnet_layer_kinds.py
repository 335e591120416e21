"""Gluon blocks are recorded by class (nn.Activation by its act_type, the Activation child a Dense
built with `activation=` holds), so dead_relu and saturated_activation find them whatever their
prefixes, imperative or hybridized."""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet", reason="mxnet is not installed in this venv (only in the all-frameworks venv)")

import tensortap as tt  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

R = tt.rules.get
X = np.random.default_rng(0).standard_normal((32, 20)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 2, 32).astype(np.float32)


def fit(run, blocks, hybridize, include=("weights", "gradients", "outputs", "losses"), steps=3):
    """Trainer.step SGD with the hook registered; returns the net."""
    net = nn.HybridSequential(prefix="net_")
    with net.name_scope():
        net.add(*blocks())
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    if hybridize:
        net.hybridize()
    hook = tt.Hook(run, include_collections=list(include), save_config=tt.SaveConfig(save_interval=1))
    hook.register(net)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(steps):
        with autograd.record():
            loss = loss_fn(net(mx.nd.array(X)), mx.nd.array(Y)).mean()
        loss.backward()
        trainer.step(1)
        hook.record_loss(loss)
    hook.close()
    assert not hook.errors, hook.errors
    return net


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_dead_relu_by_act_type(tmp_path, hybridize):
    def blocks():
        return (nn.Dense(64, in_units=20, bias_initializer=mx.init.Constant(-100.0)),
                nn.Activation("relu", prefix="gate_"), nn.Dense(16, in_units=64, activation="relu"),
                nn.Dense(2, in_units=16))
    run = str(tmp_path / "run")
    net = fit(run, blocks, hybridize)
    # reference, in numpy from the trained weights: the first layer's pre-activations are all negative
    w, b = (p.data().asnumpy() for p in list(net.collect_params().values())[:2])
    assert (X @ w.T + b < 0).all()
    trial = tt.create_trial(run)
    layers = trial.layers()
    assert (layers["net_gate"].class_name, layers["net_gate"].kind) == ("mxnet.gluon.nn.activations.Activation", "relu")
    assert layers["net_dense1_relu"].kind == "relu" and layers["net_dense1"].kind == "linear"
    assert trial.tensor_names(layer_kind="relu", regex="output") == ["net_dense1_relu/output_0", "net_gate/output_0"]
    res = tt.invoke_rule(R("dead_relu")(), trial)
    assert [r.outcome for r in res] == ["fired"] * 3
    # gate: all dead; the Dense(activation="relu") after it sees only its bias: a unit is dead or always on
    assert res[0].values["dead_percent"]["net_gate/output_0"] == 100.0
    assert set(res[0].values["dead_percent"]) == {"net_gate/output_0", "net_dense1_relu/output_0"}


def test_saturated_activation_by_act_type(tmp_path):
    def blocks(act):
        return lambda: (nn.Dense(16, in_units=20, weight_initializer=mx.init.Zero(),
                                 bias_initializer=mx.init.Constant(12.0)),
                        nn.Activation(act, prefix="squash_"), nn.Dense(2, in_units=16))
    run = str(tmp_path / "tanh")
    fit(run, blocks("tanh"), True, include=["inputs"], steps=1)
    res = tt.invoke_rule(R("saturated_activation")(), tt.create_trial(run))
    assert [r.outcome for r in res] == ["fired"] and res[0].values["saturated_percent"] == {"net_squash/input_0": 100.0}
    run = str(tmp_path / "sigmoid")
    fit(run, blocks("sigmoid"), True, include=["inputs"], steps=1)
    res = tt.invoke_rule(R("saturated_activation")(), tt.create_trial(run))
    assert [r.outcome for r in res] == ["quiet"] and res[0].values["saturated_percent"] == {"net_squash/input_0": 0.0}
