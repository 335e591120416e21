"""Gluon capture: names, bit-exact weights/gradients/outputs, hybridized models, modes, losses."""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet", reason="mxnet is not installed in this venv (only in the all-frameworks venv)")

import tensortap as tt  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

from mx_models import cnn, images, train  # noqa: E402

ALL = ["weights", "biases", "gradients", "losses", "outputs", "inputs"]


@pytest.mark.parametrize("hybridize", [False, True, "static"], ids=["imperative", "hybridized", "static_alloc"])
def test_weights_gradients_outputs_bit_exact(tmp_path, hybridize):
    net = cnn(hybridize=hybridize)
    data = images(6)
    hook = tt.Hook(str(tmp_path / "run"), include_collections=ALL, save_config=tt.SaveConfig(save_interval=2))
    snaps = train(net, data, hook, optimizer="sgd", opt_params={"learning_rate": 0.1, "momentum": 0.9}, snapshot=True)
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps() == [0, 2, 4]
    names = list(net.collect_params().keys())
    assert set(trial.tensor_names(collection="weights")) | set(trial.tensor_names(collection="biases")) == set(names)
    assert "cnn_conv0_bias" in trial.tensor_names(collection="biases")
    for s in trial.steps():
        for n in names:
            assert np.array_equal(trial.tensor(n).value(s), snaps[s]["params"][n]), (n, s)
        for n, g in snaps[s]["grads"].items():
            assert np.array_equal(trial.tensor(f"gradients/{n}").value(s), g), (n, s)
        assert "gradients/cnn_batchnorm0_running_mean" not in trial.tensor_names()
        # real per-step layer values, also when hybridized: the last block's output is the model output
        assert np.array_equal(trial.tensor("cnn_dense0/output_0").value(s), snaps[s]["out"])
        assert np.array_equal(trial.tensor("cnn/output_0").value(s), snaps[s]["out"])
        assert np.array_equal(trial.tensor("cnn/input_0").value(s), data[s][0].asnumpy())
        x0 = data[s][0]
        conv0 = trial.tensor("cnn_conv0/output_0").value(s)
        ref = mx.nd.Convolution(x0, mx.nd.array(snaps[s]["params"]["cnn_conv0_weight"]),
                                mx.nd.array(snaps[s]["params"]["cnn_conv0_bias"]), kernel=(3, 3), num_filter=4)
        assert np.allclose(conv0, np.maximum(ref.asnumpy(), 0), atol=1e-6)
        assert trial.tensor("loss").value(s).shape == ()  # register_loss stores the batch mean as a scalar
        assert np.isclose(float(trial.tensor("loss").value(s)), snaps[s]["loss"], rtol=1e-6)
    assert not np.array_equal(trial.tensor("cnn_conv0_weight").value(0), trial.tensor("cnn_conv0_weight").value(2))


def test_unsaved_steps_leave_the_hybridized_model_alone(tmp_path):
    net = cnn(hybridize=True)
    hook = tt.Hook(str(tmp_path / "run"), include_collections=ALL, save_config=tt.SaveConfig(save_steps=[0]))
    data = images(3)
    hook.register(net)
    x, _ = data[0]
    with autograd.record():
        net(x)  # step 0: saved, runs imperatively with temporary hooks
    assert net._cached_op is None and net._active
    assert all(not b._forward_hooks for b in net._children.values())
    with autograd.record():
        net(data[1][0])  # step 1: not saved, the cached graph runs
    assert net._cached_op is not None
    assert all(not b._forward_hooks and b._active for b in net._children.values())
    hook.close()
    assert tt.create_trial(str(tmp_path / "run")).steps() == [0]


def test_modes_follow_autograd_and_user(tmp_path):
    net = cnn()
    data = images(4)
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    train(net, data[:2], hook)
    net(data[2][0])  # outside autograd.record(): eval
    hook.set_mode(tt.modes.PREDICT)
    net(data[3][0])
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps(mode=tt.modes.TRAIN) == [0, 1]
    assert trial.steps(mode=tt.modes.EVAL) == [0]
    assert trial.steps(mode=tt.modes.PREDICT) == [0]


class Twice(gluon.HybridBlock):
    """Calls one Dense twice per forward (like a shared ReLU): both calls must be kept."""

    def __init__(self):
        super().__init__(prefix="twice_")
        with self.name_scope():
            self.shared = nn.Dense(5, in_units=5, prefix="shared_")

    def hybrid_forward(self, F, x):
        return self.shared(F.relu(self.shared(x)))


def test_block_called_twice_and_deferred_init(tmp_path):
    net = Twice()
    net.initialize()
    net.hybridize()
    lazy = nn.Dense(3, prefix="lazy_")  # in_units unknown: deferred initialisation
    lazy.initialize()
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["outputs", "weights"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(net)
    x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32))
    first = net.shared(x)
    out = net(x)
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))
    assert np.array_equal(trial.tensor("twice_shared/output_0").value(0), first.asnumpy())
    assert np.array_equal(trial.tensor("twice_shared#1/output_0").value(0), out.asnumpy())

    hook2 = tt.Hook(str(tmp_path / "run2"), include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    hook2.register(lazy)
    lazy(x)
    w0 = lazy.weight.data().asnumpy()
    hook2.close()
    assert np.array_equal(tt.create_trial(str(tmp_path / "run2")).tensor("lazy_weight").value(0), w0)


def test_gradients_without_a_trainer_and_at_close(tmp_path):
    """A hand-written SGD loop: gradients are taken at the next forward, the last one at close()."""
    net = cnn()
    data = images(3)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(net)
    want = []
    for x, y in data:
        with autograd.record():
            loss = loss_fn(net(x), y).mean()
        loss.backward()
        hook.record_loss(loss)
        want.append(net[0].weight.grad().asnumpy())
        for p in net.collect_params().values():
            if p.grad_req != "null":
                p.set_data(p.data() - 0.1 * p.grad())
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))
    for s in range(3):
        assert np.array_equal(trial.tensor("gradients/cnn_conv0_weight").value(s), want[s])
    assert trial.tensor("loss").value(2).size == 1  # record_loss keeps the (1,) shape mxnet gives .mean()


def test_register_loss_before_register(tmp_path):
    net = cnn()
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    hook.register_loss(loss_fn)
    hook.register(net)
    x, y = images(1)[0]
    with autograd.record():
        loss = loss_fn(net(x), y).mean()
    hook.close()
    assert np.isclose(float(tt.create_trial(str(tmp_path / "run")).tensor("loss").value(0)), float(loss.asscalar()))


def test_trainer_patch_is_removed_and_errors_are_clear(tmp_path):
    orig = gluon.Trainer.step
    net = cnn()
    hook = tt.Hook(str(tmp_path / "run"))
    hook.register(net)
    assert gluon.Trainer.step is not orig
    with pytest.raises(tt.ConfigError, match="Gluon loss block"):
        hook.register_loss(lambda a, b: a)
    hook.close()
    assert gluon.Trainer.step is orig
    with pytest.raises(tt.ConfigError, match="no block named 'cnn_conv9'.*cnn_conv0"):
        tt.explain.gradcam(net, np.zeros((1, 1, 12, 12), np.float32), "cnn_conv9")
