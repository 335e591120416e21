"""Grad-CAM: hand-computed value, brute-force autograd reference, no side effects, during training."""
from tests.conftest import require

require("torch")

import copy  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.explain import cam_from_tensors  # noqa: E402

from torch_models import SmallResNet  # noqa: E402

torch.set_num_threads(1)


def test_hand_computed_on_a_fixed_weight_cnn():
    conv = nn.Conv2d(1, 2, 1)
    fc = nn.Linear(2, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.5]))
        fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -2.0]]))
        fc.bias.zero_()
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)
    x = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]], [[[-1.0, -2.0], [3.0, 0.0]]]])
    cam = tt.explain.gradcam(model, x, target_layer="0", targets=[2, 1])
    # by hand: A^0 = 2x, A^1 = -x + 0.5; y_c = sum_k W[c,k] mean(A^k) => alpha_k = W[c,k] / 4
    xs = x[:, 0].numpy().astype(np.float64)
    a0, a1 = 2 * xs, -xs + 0.5
    want0 = np.maximum(0.5 / 4 * a0[0] + -2.0 / 4 * a1[0], 0)  # image 0, class 2
    want1 = np.maximum(0.0 / 4 * a0[1] + 1.0 / 4 * a1[1], 0)  # image 1, class 1
    np.testing.assert_allclose(cam.raw[0], want0, rtol=1e-6)
    np.testing.assert_allclose(cam.raw[1], want1, rtol=1e-6)
    assert list(cam.targets) == [2, 1]
    assert cam.heatmap.shape == (2, 2, 2) and cam.heatmap.max() == pytest.approx(1.0)


def test_matches_brute_force_autograd_on_a_resnet_and_leaves_no_trace():
    torch.manual_seed(0)
    model = SmallResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 3, 12, 12)
    nn.functional.cross_entropy(model(x), torch.arange(6) % 5).backward()  # real .grad and BN statistics
    opt.step()
    model.train()
    model.layer1.eval()  # a model half in eval mode must stay exactly so
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    state_before = copy.deepcopy(model.state_dict())
    from tensortap_torch.explainer import TorchExplainer

    imgs = torch.randn(3, 3, 12, 12)
    acts, grads, size, targets = TorchExplainer().gradcam_tensors(model, imgs, model.layer2, None)
    assert size == (12, 12) and acts.shape == grads.shape == (3, 16, 6, 6)
    assert model.training and not model.layer1.training and model.layer2.training
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads_before[n]), n
    for k, v in model.state_dict().items():
        assert torch.equal(v, state_before[k]), k
    # brute force: one image at a time, eval mode, plain backward on a copy
    ref = copy.deepcopy(model).eval()
    for i in range(3):
        store = {}

        def keep(_m, _a, out):
            out.retain_grad()
            store["a"] = out  # noqa: B023 (hooked and removed within this iteration)

        h = ref.layer2.register_forward_hook(keep)
        logits = ref(imgs[i:i + 1])
        h.remove()
        c = int(logits.argmax())
        assert c == targets[i]
        logits[0, c].backward()
        np.testing.assert_allclose(acts[i], store["a"].detach().numpy()[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grads[i], store["a"].grad.numpy()[0], rtol=1e-4, atol=1e-7)
    cam = tt.explain.gradcam(model, imgs, target_layer="layer2", targets=[0, 1, 2])
    assert cam.raw.shape == (3, 6, 6) and cam.heatmap.shape == (3, 12, 12)
    assert list(cam.targets) == [0, 1, 2]


def test_bad_target_layer_names_the_fix():
    model = SmallResNet()
    with pytest.raises(tt.ConfigError, match="layer2"):
        tt.explain.gradcam(model, torch.randn(1, 3, 8, 8), target_layer="layr2")
    with pytest.raises(tt.ConfigError, match="channels"):
        tt.explain.gradcam(model, torch.randn(1, 3, 8, 8), target_layer="fc")


def _train(model, data, hook=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if hook is not None:
        hook.register(model)
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if hook is not None:
        hook.close()
    return losses


def test_feature_maps_during_training_do_not_disturb_it(run_dir):
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(10, 3, 12, 12, generator=g), torch.randint(0, 5, (10,), generator=g)) for _ in range(4)]
    torch.manual_seed(0)
    model = SmallResNet()
    start = copy.deepcopy(model)
    plain = copy.deepcopy(model)
    hook = tt.Hook(run_dir, include_collections=[tt.Collection("feature_maps", include_regex=["^layer2$"]), "weights"],
                   save_config=tt.SaveConfig(save_interval=2))
    losses = _train(model, data, hook)
    assert losses == _train(plain, data)  # bit-identical training with and without Grad-CAM capture
    for k, v in model.state_dict().items():
        assert torch.equal(v, plain.state_dict()[k]), k
    trial = tt.create_trial(run_dir)
    fm = set(trial.tensor_names(collection="feature_maps"))
    assert fm == ({f"gradcam/layer2/{n}" for n in ("activations", "gradients", "cam", "targets", "scores")}
                  | {"gradcam/images"})
    assert trial.tensor("gradcam/layer2/activations").steps() == [0, 2]
    acts = trial.tensor("gradcam/layer2/activations").value(0)
    grads = trial.tensor("gradcam/layer2/gradients").value(0)
    assert acts.shape == (8, 16, 6, 6)  # gradcam_max_images of the batch of 10
    from tensortap_torch.explainer import TorchExplainer

    want_a, want_g, _, want_t = TorchExplainer().gradcam_tensors(start, data[0][0][:8], "layer2", None)
    np.testing.assert_allclose(acts, want_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads, want_g, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(trial.tensor("gradcam/layer2/targets").value(0), want_t)
    np.testing.assert_allclose(trial.tensor("gradcam/layer2/cam").value(0), cam_from_tensors(want_a, want_g),
                               rtol=1e-4, atol=1e-6)
    images = trial.tensor("gradcam/images").value(2)
    assert images.shape == (8, 12, 12, 3) and images.min() >= 0 and images.max() <= 1


def test_feature_maps_on_a_probe_forward_under_no_grad(run_dir):
    """A probe pass the usual way (eval mode, inside torch.no_grad()) between training steps still
    records Grad-CAM in `feature_maps`: the map equals one computed here with plain torch autograd."""
    torch.manual_seed(0)
    model = SmallResNet(classes=6, width=16)  # layer2: 32 channels
    hook = tt.Hook(run_dir, include_collections=[tt.Collection("feature_maps", include_regex=["^layer2$"])],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(2)
    x, y, probe = torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 6, (16,), generator=g), \
        torch.randn(8, 3, 16, 16, generator=g)
    for _ in range(2):
        model.train()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            model(probe)
    hook.close()
    assert not hook.errors
    cam = tt.create_trial(run_dir).tensor("gradcam/layer2/cam")
    assert cam.steps(mode="eval") == [0, 1]
    seen = {}
    handle = model.layer2.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    out = model(probe)  # eval mode, grad on: the reference, outside the plugin
    handle.remove()
    grad, = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), seen["a"])
    want = torch.relu((grad.mean((2, 3), keepdim=True) * seen["a"]).sum(1)).detach().numpy()
    got = cam.value(1, mode="eval")
    assert want.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * float(want.max()))


def test_explaining_a_hooked_model_does_not_count_a_step(run_dir):
    torch.manual_seed(0)
    model = SmallResNet()
    hook = tt.Hook(run_dir, include_collections=["weights", "outputs"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    model(torch.randn(2, 3, 8, 8))
    assert hook.step == 0
    tt.explain.gradcam(model, torch.randn(2, 3, 8, 8), target_layer=model.layer1)
    model(torch.randn(2, 3, 8, 8))
    hook.close()
    assert hook.step == 1 and not hook.errors
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 1]
    assert "layer1#1/output_0" not in trial.tensor_names()


@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "inference_mode_inputs"])
def test_works_where_autograd_is_off_and_leaves_no_trace(run_dir, context):
    """Inside torch.no_grad() and torch.inference_mode() (inputs made there too) the map is the one
    computed outside; the model's modes, parameters, .grad, the caller's grad mode and the hook's
    step count are untouched."""
    torch.manual_seed(0)
    model = SmallResNet()
    nn.functional.cross_entropy(model(torch.randn(6, 3, 12, 12)), torch.arange(6) % 5).backward()
    model.train()
    model.layer1.eval()
    hook = tt.Hook(run_dir, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    model(torch.randn(2, 3, 12, 12))
    imgs = torch.randn(3, 3, 12, 12)
    want = tt.explain.gradcam(model, imgs, target_layer=model.layer2)
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    state_before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    step = hook.step
    ctx = torch.no_grad() if context == "no_grad" else torch.inference_mode()
    with ctx:
        x = imgs.clone() if context == "inference_mode_inputs" else imgs
        cam = tt.explain.gradcam(model, x, target_layer=model.layer2)
        assert not torch.is_grad_enabled()
        assert torch.is_inference_mode_enabled() == (context != "no_grad")
    np.testing.assert_array_equal(cam.raw, want.raw)
    np.testing.assert_array_equal(cam.targets, want.targets)
    assert cam.raw.max() > 0
    assert [m.training for m in model.modules()] == modes
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads_before[n]), n
    for k, v in model.state_dict().items():
        assert torch.equal(v, state_before[k]), k
    assert hook.step == step
    hook.close()
    assert not hook.errors


def test_model_built_in_inference_mode_is_a_clear_error():
    with torch.inference_mode():
        model = SmallResNet()
    with pytest.raises(tt.ConfigError, match="inference_mode"):
        tt.explain.gradcam(model, torch.randn(1, 3, 8, 8), target_layer="layer2")
