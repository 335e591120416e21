"""Keras layers are recorded by class: ReLU / Activation layers and layers built with
`activation=` (whose outputs are the activation's outputs, whose inputs are not its inputs), so
dead_relu and saturated_activation find them whatever their names, and say what they cannot see."""
from __future__ import annotations

from tests.conftest import require

require("tensorflow", "keras")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402
import tensortap as tt  # noqa: E402
import tt_tf_helpers  # noqa: E402,F401 - its import sets TF to one thread per op
from tensortap.cli import main as cli  # noqa: E402
from tensortap.rules import RuleNeedsWarning  # noqa: E402

L = keras.layers
R = tt.rules.get
X = np.random.default_rng(0).standard_normal((64, 20)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 2, 64)


def fit(run, layers, include=("weights", "gradients", "outputs", "losses"), rules=(), epochs=1):
    """model.fit with the hook registered (2 batches per epoch); returns the model."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), *layers], name="net")
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    hook = tt.Hook(run, include_collections=list(include), save_config=tt.SaveConfig(save_interval=1))
    for r in rules:
        hook.add_rule(r)
    hook.register(model)
    model.fit(X, Y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    hook.close()
    assert not hook.errors, hook.errors
    return model


def test_dead_relu_by_class_and_by_activation_argument(tmp_path, capsys):
    run = str(tmp_path / "run")
    model = fit(run, [L.Dense(64, activation="relu", bias_initializer=keras.initializers.Constant(-100.0), name="fc1"),
                      L.Dense(32, name="fc2"), L.ReLU(name="gate"), L.Dense(2, activation="softmax", name="out")],
                rules=[R("dead_relu")()])
    # reference, through Keras itself on the data: fc1's ReLU output is all zeros, so is gate's
    h = model.get_layer("fc1")(X)
    assert not np.asarray(h).any() and not np.asarray(model.get_layer("gate")(model.get_layer("fc2")(h))).any()
    trial = tt.create_trial(run)
    layers = trial.layers()
    assert (layers["net/fc1"].kind, layers["net/fc1"].activation) == ("linear", "relu")
    assert (layers["gate"].class_name.rsplit(".", 1)[-1], layers["gate"].kind) == ("ReLU", "relu")
    assert layers["net/out"].activation == "softmax" and layers["net/fc2"].activation is None
    assert trial.layer_kind("net/fc1/output_0") == "relu" and trial.layer_kind("net/fc1/input_0") == "linear"
    assert cli(["rules", "run", run, "--rule", "dead_relu"]) == 1
    res = tt.invoke_rule(R("dead_relu")(), trial)
    assert [r.outcome for r in res] == ["fired", "fired"]
    assert res[0].values["dead_percent"] == {"gate/output_0": 100.0, "net/fc1/output_0": 100.0}
    assert [r["outcome"] for r in trial.rule_results()] == ["fired", "fired"]


def test_saturated_activation_layer_and_fused_activation(tmp_path):
    big = keras.initializers.Constant(12.0)
    run = str(tmp_path / "layer")
    fit(run, [L.Dense(16, kernel_initializer="zeros", bias_initializer=big, name="fc1"), L.Activation("tanh", name="a"),
              L.Dense(2, activation="softmax", name="out")], include=["inputs"])
    res = tt.invoke_rule(R("saturated_activation")(), tt.create_trial(run))
    assert [r.outcome for r in res] == ["fired", "fired"] and res[0].values["saturated_percent"] == {"a/input_0": 100.0}
    # the same pre-activations, as sigmoid: inside its non-flat range (below 17): quiet
    run = str(tmp_path / "sigmoid")
    fit(run, [L.Dense(16, kernel_initializer="zeros", bias_initializer=big, name="fc1"),
              L.Activation("sigmoid", name="a"), L.Dense(2, activation="softmax", name="out")], include=["inputs"])
    res = tt.invoke_rule(R("saturated_activation")(), tt.create_trial(run))
    assert [r.outcome for r in res] == ["quiet", "quiet"] and res[0].values["saturated_percent"] == {"a/input_0": 0.0}
    # Dense(activation="tanh"): its pre-activations are never captured, and the rule says so
    run = str(tmp_path / "fused")
    with pytest.warns(RuleNeedsWarning, match="apply the activation inside the layer"):
        fit(run, [L.Dense(16, activation="tanh", bias_initializer=big, name="fc1"), L.Dense(2, name="out")],
            include=["inputs"], rules=[R("saturated_activation")()])
    res = tt.invoke_rule(R("saturated_activation")(), tt.create_trial(run))
    assert [r.outcome for r in res] == ["skipped", "skipped"]
    assert "tanh or sigmoid is applied inside 1 layer(s) (net/fc1" in res[0].message
