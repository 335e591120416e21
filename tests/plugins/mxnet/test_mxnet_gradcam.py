"""Grad-CAM for Gluon CNNs: a hand-computed value, an autograd brute force, no side effects."""
from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet", reason="mxnet is not installed in this venv (only in the all-frameworks venv)")

import tensortap as tt  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402
from tensortap.explain import cam_from_tensors  # noqa: E402

import tensortap_mxnet  # noqa: E402
from mx_models import cnn, images, param_values, train  # noqa: E402


def test_hand_computed_value():
    """A^0 = x, A^1 = -x, GAP, y = W a: alpha_k = W[c, k] / (h w), so for class 1 (W = [3, -1]) the map
    is relu(3/4 x + 1/4 x) = x, and for class 0 (W = [1, 2]) relu(-x/4) = 0."""
    net = nn.HybridSequential(prefix="tiny_")
    with net.name_scope():
        net.add(nn.Conv2D(2, 1, in_channels=1, use_bias=False), nn.GlobalAvgPool2D(), nn.Flatten(),
                nn.Dense(2, in_units=2, use_bias=False))
    net.initialize()
    net[0].weight.set_data(mx.nd.array([1.0, -1.0]).reshape((2, 1, 1, 1)))
    net[3].weight.set_data(mx.nd.array([[1.0, 2.0], [3.0, -1.0]]))
    net.hybridize()
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[None, None]
    cam = tt.explain.gradcam(net, x, target_layer=net[0], targets=[1])
    assert np.allclose(cam.raw[0], x[0, 0])
    assert np.allclose(cam.heatmap[0], (x[0, 0] - 1) / 3)
    assert tt.explain.gradcam(net, x, "tiny_conv0", targets=[0]).raw.max() == 0
    assert list(tt.explain.gradcam(net, x, "0").targets) == [int(np.argmax(net(mx.nd.array(x)).asnumpy()))]


def test_matches_autograd_brute_force_and_leaves_training_state_alone():
    net = cnn(hybridize=True)
    data = images(2)
    train(net, data[:1])  # real weights and BN statistics
    x = data[1][0][:3]
    with autograd.record():
        loss = net(data[0][0]).sum()
    loss.backward()  # gradients the user has not applied yet
    grads_before = {n: p.grad().asnumpy() for n, p in net.collect_params().items() if p.grad_req != "null"}
    params_before = param_values(net)
    cam = tt.explain.gradcam(net, x, target_layer="cnn_conv1", targets=[0, 1, 3])
    for n, g in grads_before.items():
        assert np.array_equal(net.collect_params()[n].grad().asnumpy(), g), n
    for a, b in zip(params_before, param_values(net)):
        assert np.array_equal(a, b)  # BatchNorm running statistics included
    assert all(b._active for b in net._children.values())
    # brute force: per image, the tail of the network on a leaf copy of the feature map
    head, tail = net[:3], net[3:]
    acts = head(x)
    ref_grads = []
    for i, t in enumerate([0, 1, 3]):
        a = acts[i:i + 1].copy()
        a.attach_grad()
        with autograd.record(train_mode=False):
            y = tail(a)[0, t]
        y.backward(train_mode=False)  # the forward used running statistics
        ref_grads.append(a.grad.asnumpy())
    ref = cam_from_tensors(acts.asnumpy(), np.concatenate(ref_grads))
    assert cam.raw.shape == (3, 3, 3) and cam.heatmap.shape == (3, 12, 12)
    assert np.allclose(cam.raw, ref, rtol=1e-5, atol=1e-7) and cam.raw.max() > 0


def test_record_gradcam_during_training_does_not_change_training(tmp_path):
    data = images(4)
    ref = cnn(hybridize=True)
    train(ref, data)
    net = cnn(hybridize=True)
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["feature_maps", "losses"],
                   save_config=tt.SaveConfig(save_interval=2))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    hook.register(net)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    stored = []
    for x, y in data:
        with autograd.record():
            loss = loss_fn(net(x), y).mean()
        loss.backward()
        trainer.step(1)
        stored.append(tensortap_mxnet.record_gradcam(hook, net, x[:2], "cnn_conv1", targets=y[:2].asnumpy()))
    hook.close()
    assert stored == [True, False, True, False]
    for a, b in zip(param_values(ref), param_values(net)):
        assert np.array_equal(a, b)
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.tensor("gradcam/cnn_conv1/cam").value(2).shape == (2, 3, 3)
    assert trial.tensor("gradcam/images").value(0).shape == (2, 12, 12, 1)
    assert set(trial.tensor_names(collection="feature_maps")) >= {
        "gradcam/cnn_conv1/activations", "gradcam/cnn_conv1/gradients", "gradcam/cnn_conv1/targets",
        "gradcam/cnn_conv1/scores"}
