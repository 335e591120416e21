"""The torch plugin with tensors on a CUDA device: saved values equal the tensors at capture time,
reductions computed on the device agree with numpy, an unsaved step never synchronises the device,
and AMP (float16 + GradScaler), Grad-CAM and attention give what they give on the CPU.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
`python -m pytest tests/plugins/torch/test_torch_cuda.py` (docs/torch.md, "On a GPU").
"""
from tests.conftest import require

require("torch")

import threading  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.reductions import REDUCTIONS, canonical, pack, reduce_numpy  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")
DEV = "cuda"
REDS = ("min", "max", "mean", "std", "l2")


class CNN(nn.Module):
    """Conv + BatchNorm + in-place ReLU, then a 4M-parameter Linear: big enough that reducing it
    on another thread takes longer than the optimizer's in-place update of the same memory."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(8))
        self.fc1 = nn.Linear(32 * 8 * 8, 2048)
        self.fc2 = nn.Linear(2048, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


def _batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, 16, 16, generator=g).to(DEV), torch.randint(0, 10, (16,), generator=g).to(DEV))
            for _ in range(n)]


def _model() -> CNN:
    torch.manual_seed(0)
    return CNN().to(DEV)


def test_saved_values_are_the_tensors_at_capture_time(run_dir):
    """Raw values bit-exact, device reductions within float32 summation error of numpy's, for
    weights at the step start (before SGD with momentum changes them in place), gradients after
    backward, a layer output and the loss."""
    model = _model()
    rc = tt.ReductionConfig(reductions=list(REDS), save_raw_tensor=True)
    hook = tt.Hook(run_dir, include_collections=["weights", "biases", "gradients", "outputs", "losses"],
                   reduction_config=rc, save_config=tt.SaveConfig(save_interval=2))
    hook.register(model)
    loss_fn = nn.CrossEntropyLoss()
    hook.register_loss(loss_fn)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref = {}
    for step, (x, y) in enumerate(_batches(6)):
        if step % 2 == 0:
            ref[step] = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        if step % 2 == 0:
            ref[step].update({f"gradients/{n}": p.grad.cpu().clone() for n, p in model.named_parameters()})
            ref[step]["fc2/output_0"] = logits.detach().cpu().clone()
            ref[step]["loss"] = loss.detach().cpu().clone()
        opt.step()
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 2, 4]
    for step, tensors in ref.items():
        for name, want in tensors.items():
            want = want.numpy()
            t = trial.tensor(name)
            assert np.array_equal(t.value(step), want), (name, step)
            expect = reduce_numpy(want, REDS)
            for r in REDS:
                np.testing.assert_allclose(t.reduction_value(step, r), expect[r], rtol=2e-5, atol=1e-7,
                                           err_msg=f"{name} {r} at step {step}")


def _sync_calls(hook, model, batches, loss_fn, opt):
    """Run the steps under torch's sync debug mode; return (step, thread name) of each
    synchronising CUDA call (a host copy, .item(), a blocking wait)."""
    seen, step = [], [-1]

    def show(message, category, *a, **k):
        if "synchroniz" in str(message):
            seen.append((step[0], threading.current_thread().name))

    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            for i, (x, y) in enumerate(batches):
                step[0] = i
                opt.zero_grad(set_to_none=False)
                loss_fn(model(x), y).backward()
                opt.step()
            step[0] = "close"
            hook.close()
    finally:
        torch.cuda.set_sync_debug_mode(prev)
    return seen


@pytest.mark.parametrize("what", ["raw", "reductions"])
def test_unsaved_steps_never_synchronise_the_device(run_dir, what):
    """The issue's promise: nothing copied off the device or synchronised on a step that is not
    saved. Saved steps 0 and 5 of 8; raw copies synchronise the training thread on the saved
    steps (the control: the detector works), reductions only on the reducer thread."""
    model = _model()
    batches = _batches(8)
    for x, _ in batches[:2]:  # warm-up before the hook (cuDNN picks its algorithms)
        model(x)
    rc = tt.ReductionConfig(reductions=list(REDS)) if what == "reductions" else None
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients", "outputs", "losses"], reduction_config=rc,
                   save_config=tt.SaveConfig(save_steps=[0, 5]))
    hook.register(model)
    loss_fn = nn.CrossEntropyLoss()
    hook.register_loss(loss_fn)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen = _sync_calls(hook, model, batches, loss_fn, opt)
    assert not hook.errors, hook.errors
    main = threading.main_thread().name
    on_training_thread = {s for s, th in seen if th == main}
    assert on_training_thread - {0, 5, "close"} == set(), seen
    if what == "raw":
        assert {0, 5} <= on_training_thread, seen  # host copies are synchronising calls: the detector sees them
    else:
        assert on_training_thread <= {"close"}, seen  # reductions leave the device on the reducer thread only
        assert any(th != main for _, th in seen), seen
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 5]


def test_amp_float16_with_grad_scaler_saves_the_scaled_gradients(run_dir):
    """Under autocast(float16) the parameters and their .grad stay float32; the gradients a hook
    sees after backward are the scaled ones (GradScaler unscales later, in scaler.step)."""
    model = _model()
    hook = tt.Hook(run_dir, include_collections=["gradients", "outputs"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    scaler = torch.amp.GradScaler("cuda", init_scale=1024.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = _batches(1)[0]
    opt.zero_grad()
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
    scaler.scale(loss).backward()
    scaled = model.fc2.weight.grad.cpu().clone()
    scaler.step(opt)
    scaler.update()
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(run_dir)
    got = trial.tensor("gradients/fc2.weight").value(0)
    assert got.dtype == np.float32 and np.array_equal(got, scaled.numpy())
    out = trial.tensor("fc2/output_0").value(0)
    assert out.dtype == np.float16 and np.array_equal(out, logits.detach().cpu().numpy())


def test_gradcam_and_attention_agree_with_the_cpu():
    """The same weights on the GPU and on the CPU give the same maps and attention probabilities."""
    model = _model().eval()
    x = torch.randn(4, 3, 16, 16)
    tf32, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False  # full float32 convolutions
    try:
        cam_gpu = tt.explain.gradcam(model, x.to(DEV), target_layer="features.3", targets=[1, 2, 3, 4])
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    cam_cpu = tt.explain.gradcam(model.cpu(), x, target_layer="features.3", targets=[1, 2, 3, 4])
    np.testing.assert_allclose(cam_gpu.raw, cam_cpu.raw, rtol=1e-3, atol=1e-5)
    assert cam_gpu.heatmap.shape == (4, 16, 16)

    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0), 2,
                                enable_nested_tensor=False)
    xs = torch.randn(3, 5, 16)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    att_cpu = tt.explain.attention(enc.eval(), xs, None, mask)
    att_gpu = tt.explain.attention(enc.to(DEV).eval(), xs.to(DEV), None, mask.to(DEV))
    assert len(att_gpu) == len(att_cpu) == 2
    for a, b in zip(att_gpu, att_cpu):
        assert a.shape == (3, 4, 5, 5)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert np.all(a[1, :, :, 3:] == 0)  # masked keys get no attention


def test_device_reductions_of_a_mixed_batch_match_numpy():
    """The segmented passes a GPU uses for many tensors at once (NaN, inf, float32 and float64,
    a one-value loss, sizes from 1 to 4M) give numpy's values, every reduction, the histogram too."""
    from tensortap_torch import convert

    g = torch.Generator().manual_seed(3)
    nan_inf = torch.randn(50, generator=g)
    nan_inf[7], nan_inf[20] = float("nan"), float("inf")
    tensors = [torch.randn(2048, 2048, generator=g), torch.randn(17, generator=g) + 5.0, nan_inf, torch.tensor(2.5),
               torch.full((64,), 1.0), torch.randn(80_000, generator=g, dtype=torch.float64),
               torch.randn(3, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64),
               torch.randint(-3, 4, (30,), generator=g), torch.zeros(0), torch.randn(9, generator=g).half()]
    names = canonical(REDUCTIONS)
    items = [convert.work(t.to(DEV)) for t in tensors]
    assert len(convert._segment_groups(items, [None] * len(items))) == 2  # float32 and float64 groups
    got = convert.reduce_work(items, names, 16)
    for t, vec in zip(tensors, got):
        want = pack(reduce_numpy(convert.to_numpy(t), names, 16), names)
        np.testing.assert_allclose(vec, want, rtol=2e-6, atol=1e-9, equal_nan=True,
                                   err_msg=f"{t.dtype} {tuple(t.shape)}")


def test_inductor_compiled_module_on_the_gpu_captures_what_the_step_used(run_dir):
    """torch.compile with its default backend (inductor: Triton kernels on a GPU): the hook sees the
    original module's names, and saved gradients and weights equal what the compiled step used."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).to(DEV)
    compiled = torch.compile(model)
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=2))
    hook.register(compiled)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    grads, weights = {}, {}
    for step in range(5):
        x = torch.randn(16, 32, generator=g).to(DEV)
        weights[step] = model[2].weight.detach().cpu().clone()
        opt.zero_grad()
        loss = compiled(x).square().mean()
        hook.record_loss(loss)
        loss.backward()
        grads[step] = model[2].weight.grad.cpu().clone()
        opt.step()
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 2, 4]
    for step in (0, 2, 4):
        assert np.array_equal(trial.tensor("gradients/2.weight").value(step), grads[step].numpy())
        assert np.array_equal(trial.tensor("2.weight").value(step), weights[step].numpy())
