"""TorchAdapter capture: names, bit-exact values, repeated calls, output gradients, losses, modes."""
from tests.conftest import require

require("torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.reductions import REDUCTIONS, canonical, reduce_numpy, unpack  # noqa: E402

torch.set_num_threads(1)


class Block(nn.Module):
    """torchvision BasicBlock's pattern: one in-place ReLU module called twice per forward."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.conv1(x))
        out = self.conv2(out)
        return self.relu(out + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Block()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def _data(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 1, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def _train(hook, model, data, lr=0.05):
    hook.register(model)
    loss_fn = nn.CrossEntropyLoss()
    hook.register_loss(loss_fn)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    hook.close()
    return losses


def test_repeated_module_gets_one_tensor_per_call_and_output_gradients_match_autograd(run_url):
    torch.manual_seed(0)
    model = Net()
    hook = tt.Hook(run_url, include_collections=["outputs", "gradients", "weights", "biases", "losses"],
                   save_config=tt.SaveConfig(save_interval=2))
    data = _data(4)
    _train(hook, model, data)
    trial = tt.create_trial(run_url)
    names = set(trial.tensor_names())
    assert {"block.relu/output_0", "block.relu#1/output_0", "block.conv1/output_0", "head/output_0"} <= names
    assert {"gradients/block.relu/output_0", "gradients/block.relu#1/output_0", "gradients/stem.weight"} <= names
    assert "block.relu#2/output_0" not in names
    assert trial.steps() == [0, 2]
    assert set(trial.tensor_names(collection="biases")) == {"stem.bias", "block.conv1.bias", "block.conv2.bias",
                                                            "head.bias"}
    # reference at step 2, computed independently with retain_grad on a replica
    torch.manual_seed(0)
    ref = Net()
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(data[:3]):
        opt.zero_grad()
        s = ref.stem(x)
        c1 = ref.block.conv1(s)
        r1 = torch.relu(c1)
        r1.retain_grad()
        out = ref.block.conv2(r1) + s
        r2 = torch.relu(out)
        r2.retain_grad()
        loss = loss_fn(ref.head(r2.mean(dim=(2, 3))), y)
        loss.backward()
        if step == 2:
            break
        opt.step()
    assert np.array_equal(trial.tensor("block.relu/output_0").value(2), r1.detach().numpy())
    assert np.array_equal(trial.tensor("block.relu#1/output_0").value(2), r2.detach().numpy())
    np.testing.assert_allclose(trial.tensor("gradients/block.relu/output_0").value(2), r1.grad.numpy(),
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(trial.tensor("gradients/block.relu#1/output_0").value(2), r2.grad.numpy(),
                               rtol=1e-5, atol=1e-8)
    assert np.array_equal(trial.tensor("gradients/stem.weight").value(2), ref.stem.weight.grad.numpy())
    assert np.isclose(float(trial.tensor("loss").value(2)), loss.item())


def test_unsaved_steps_register_no_tensor_hooks_and_capture_nothing(run_dir):
    torch.manual_seed(0)
    model = Net()
    hook = tt.Hook(run_dir, include_collections=["outputs", "gradients"], save_config=tt.SaveConfig(save_steps=[1]))
    hook.register(model)
    seen = []
    orig = torch.Tensor.register_hook

    def counting(self, fn):
        seen.append(hook.step)
        return orig(self, fn)

    torch.Tensor.register_hook = counting
    try:
        for x, y in _data(3):
            nn.functional.cross_entropy(model(x), y).backward()
    finally:
        torch.Tensor.register_hook = orig
    hook.close()
    assert seen and set(seen) == {1}
    assert tt.create_trial(run_dir).steps() == [1]


def test_an_unsaved_step_runs_the_bare_model_and_loss(run_dir):
    """Hooks cost even when they return at once (torch's slower call path), so on unsaved steps
    only the top-level pre-hook is there: no gradient hooks on parameters, no forward hook on the
    loss module. Gradient hooks stay while consecutive steps want gradients (no churn)."""
    torch.manual_seed(0)
    model = Net()
    loss_fn = nn.CrossEntropyLoss()
    hook = tt.Hook(run_dir, include_collections=["gradients", "losses"],
                   save_config=tt.SaveConfig(save_steps=[1, 2, 4]))
    hook.register(model)
    hook.register_loss(loss_fn)
    params = list(model.parameters())
    present = {}
    ids = set()
    for step, (x, y) in enumerate(_data(6)):
        loss = loss_fn(model(x), y)
        grad_hooks = {h for p in params for h in (p._post_accumulate_grad_hooks or {})}
        present[step] = (len(grad_hooks), len(loss_fn._forward_hooks))
        if step == 1:
            ids = grad_hooks
        if step == 2:
            assert grad_hooks == ids  # kept from step 1, not re-registered
        loss.backward()
    hook.close()
    n = len(params)
    assert present == {0: (0, 0), 1: (n, 1), 2: (n, 1), 3: (0, 0), 4: (n, 1), 5: (0, 0)}
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [1, 2, 4]
    assert {"loss", "gradients/head.weight"} <= set(trial.tensor_names(step=4))


def test_layers_frozen_and_unfrozen_during_training(run_dir):
    """Fine-tuning freezes and unfreezes layers: gradients follow requires_grad at each saved
    step's boundary, and a frozen parameter (torch refuses hooks on it) breaks nothing. The stem
    is frozen during unsaved step 2 (the hooks are re-added at step 3), the head unfrozen at
    saved step 4 (the hooks of steps 3-5 stay)."""
    torch.manual_seed(0)
    model = Net()
    for p in model.head.parameters():
        p.requires_grad_(False)
    hook = tt.Hook(run_dir, include_collections=["gradients"], save_config=tt.SaveConfig(save_steps=[0, 1, 3, 4, 5]))
    hook.register(model)
    opt = torch.optim.SGD([p for p in model.parameters()], lr=0.05)
    for step, (x, y) in enumerate(_data(6)):
        if step == 2:
            for p in model.stem.parameters():
                p.requires_grad_(False)
        if step == 4:
            for p in model.head.parameters():
                p.requires_grad_(True)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 1, 3, 4, 5]
    seen = {s: {n for n in trial.tensor_names(step=s) if n in ("gradients/stem.weight", "gradients/head.weight")}
            for s in trial.steps()}
    assert seen == {0: {"gradients/stem.weight"}, 1: {"gradients/stem.weight"}, 3: set(),
                    4: {"gradients/head.weight"}, 5: {"gradients/head.weight"}}, seen


def test_a_failure_preparing_a_step_is_reported_and_training_goes_on(run_dir, monkeypatch):
    """Whatever goes wrong in the forward pre-hook after the step began is reported in
    hook.errors; the user's forward pass and backward run as without tensortap."""
    from tensortap_torch.adapter import TorchAdapter

    def broken(self, wanted):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(TorchAdapter, "_keep_grad_hooks", broken)
    torch.manual_seed(0)
    model, twin = Net(), Net()
    twin.load_state_dict(model.state_dict())
    hook = tt.Hook(run_dir, include_collections=["weights", "gradients"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    for x, y in _data(2):
        out = model(x)
        assert torch.equal(out, twin(x))
        nn.functional.cross_entropy(out, y).backward()
    hook.close()
    assert any("could not prepare the step" in e and "simulated failure" in e for e in hook.errors), hook.errors
    assert tt.create_trial(run_dir).steps() == []  # the failure came before the step's captures


def test_register_loss_record_loss_and_eval_mode_steps(run_url):
    torch.manual_seed(0)
    model = Net()
    hook = tt.Hook(run_url, include_collections=["losses", "weights"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    loss_fn = nn.CrossEntropyLoss()
    hook.register_loss(loss_fn, name="ce")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_losses = []
    for x, y in _data(3):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        hook.record_loss(loss * 2, name="double")
        loss.backward()
        opt.step()
        train_losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        for x, y in _data(2, seed=5):
            loss_fn(model(x), y)
    hook.close()
    trial = tt.create_trial(run_url)
    assert trial.steps(mode=tt.modes.TRAIN) == [0, 1, 2]
    assert trial.steps(mode=tt.modes.EVAL) == [0, 1]
    t = trial.tensor("ce")
    assert [float(t.value(s)) for s in range(3)] == pytest.approx(train_losses)
    assert float(trial.tensor("double").value(1)) == pytest.approx(2 * train_losses[1])
    assert "ce" in trial.tensor_names(collection="losses")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32,
                                   torch.bool])
def test_to_numpy_copies_and_reductions_match_numpy(dtype):
    from tensortap_torch.adapter import TorchAdapter

    a = TorchAdapter(None)
    g = torch.Generator().manual_seed(1)
    base = torch.randn(7, 5, generator=g) * 3
    t = (base > 0) if dtype == torch.bool else base.to(dtype)
    view = t.t()  # non-contiguous
    arr = a.to_numpy(view)
    assert arr.flags.c_contiguous and arr.shape == (5, 7)
    assert arr.dtype == (np.float32 if dtype == torch.bfloat16 else torch.empty(0, dtype=dtype).numpy().dtype)
    if dtype.is_floating_point:
        before = arr.copy()
        t.add_(1)  # in place, as an optimizer does
        assert np.array_equal(arr, before)
    p = nn.Parameter(torch.randn(3, 4))
    assert np.array_equal(a.to_numpy(p), p.detach().numpy())
    names = ["min", "max", "mean", "std", "variance", "sum", "l1", "l2", "abs_min", "abs_max", "abs_mean",
             "nan_count", "inf_count", "zero_count", "histogram"]
    # float32 (and the halves, reduced as float32) sum in float32: within ~1e-6 of numpy's float64
    rtol = 2e-6 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
    for x in (view, t[:0]):
        got = a.reduce(x, names, 16)
        want = reduce_numpy(a.to_numpy(x), names, 16)
        for r in names:
            np.testing.assert_allclose(got[r], want[r], rtol=rtol, atol=1e-12, equal_nan=True, err_msg=r)


def test_reductions_with_nan_and_inf_match_numpy():
    from tensortap_torch.convert import reduce_torch

    t = torch.tensor([1.0, float("nan"), -2.0, float("inf"), 0.0, 0.5])
    names = ["min", "max", "mean", "nan_count", "inf_count", "zero_count", "histogram"]
    got, want = reduce_torch(t, names, 4), reduce_numpy(t.numpy(), names, 4)
    for r in names:
        np.testing.assert_allclose(got[r], want[r], equal_nan=True, err_msg=r)


def test_stop_training_raises_at_the_next_step_boundary(run_dir):
    torch.manual_seed(0)
    model = Net()
    hook = tt.Hook(run_dir, include_collections=["weights"])
    hook.register(model)
    steps = 0
    with pytest.raises(tt.StopTraining, match="enough"):
        for x, _ in _data(5):
            model(x)
            steps += 1
            if steps == 2:
                hook.request_stop("enough")
    hook.close()
    assert steps == 2


def test_gradient_accumulation_saves_the_running_sum(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    hook = tt.Hook(run_dir, include_collections=["gradients"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    xs = [torch.randn(4, 3) for _ in range(2)]
    grads = []
    for x in xs:  # two micro-batches, one optimizer step
        model(x).square().mean().backward()
        grads.append(model[0].weight.grad.clone())
    hook.close()
    t = tt.create_trial(run_dir).tensor("gradients/0.weight")
    assert np.array_equal(t.value(0), grads[0].numpy())
    assert np.array_equal(t.value(1), grads[1].numpy())  # what the optimizer would apply


@pytest.mark.parametrize("values", [
    torch.full((1000,), 0.1),  # constant: the variance is exactly 0
    1000 + 1e-3 * torch.randn(5000, generator=torch.Generator().manual_seed(3)),  # tiny spread, big mean
    torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(4)).to(torch.float64) * 1e30,
    # float32 sums accumulate in float32: on 200k values still within 1e-6 of float64
    torch.randn(200_000, generator=torch.Generator().manual_seed(5)),
    0.5 + 0.5 * torch.randn(200_000, generator=torch.Generator().manual_seed(6)),  # mean = std: not centred
    1.0 + 0.05 * torch.randn(200_000, generator=torch.Generator().manual_seed(7)),  # a norm gain: centred
])
def test_reductions_are_accurate_where_naive_formulas_cancel(values):
    from tensortap_torch.convert import reduce_torch

    names = ["mean", "std", "variance", "l1", "l2", "sum", "abs_mean", "histogram"]
    got, want = reduce_torch(values, names, 8), reduce_numpy(values.numpy(), names, 8)
    for r in names:
        np.testing.assert_allclose(got[r], want[r], rtol=1e-6, atol=1e-12, err_msg=r)


@pytest.mark.parametrize("value", [2.5, -0.0, float("nan"), float("-inf"), 7, True])
def test_one_value_tensors_reduce_like_numpy(value):
    """A loss is one value: reduced in Python arithmetic, it must still be what numpy computes,
    alone and beside big and small tensors in one batch (every reduction, NaN/inf included)."""
    from tensortap_torch.convert import reduce_work, work

    names = tuple(canonical(list(REDUCTIONS)))
    one = torch.tensor(value)
    others = [torch.randn(70_000, generator=torch.Generator().manual_seed(8)), torch.randn(5), one.reshape(1, 1)]
    for batch in ([one], [others[0], one, others[1], others[2]]):
        got = reduce_work([work(t) for t in batch], names, 4)
        for t, vec in zip(batch, got):
            want = reduce_numpy(t.numpy(), names, 4)
            for r in names:
                v = unpack(vec, names, r)
                v = np.concatenate(v) if r == "histogram" else v
                np.testing.assert_allclose(v, want[r], rtol=2e-6, atol=1e-12, equal_nan=True, err_msg=r)


def test_sum_of_squares_scratch_buffer_serves_every_size_and_thread(monkeypatch):
    """The CPU squares go through one reused buffer per thread (at most SQUARES_CHUNK values; bigger
    tensors chunk by chunk): a smaller tensor after a bigger one, a float64 after a float32, a
    tensor of several chunks, and two threads at once all get their own values' sums."""
    import threading

    from tensortap_torch import convert
    from tensortap_torch.convert import reduce_torch

    monkeypatch.setattr(convert, "SQUARES_CHUNK", 150_000)  # the 300k and 200k tensors take 2 chunks

    g = torch.Generator().manual_seed(9)
    tensors = [torch.randn(300_000, generator=g), torch.randn(100_000, generator=g) * 3,
               torch.randn(120_000, generator=g, dtype=torch.float64), torch.randn(200_000, generator=g)]
    want = [float(np.sqrt((t.double().numpy() ** 2).sum())) for t in tensors]
    errors = []

    def run(order):
        try:
            for _ in range(20):
                for i in order:
                    got = float(reduce_torch(tensors[i], ["l2"])["l2"])
                    if abs(got - want[i]) > 1e-6 * want[i]:
                        errors.append((i, got, want[i]))
            if convert._scratch.buf.numel() > 150_000:  # this thread's buffer stayed within one chunk
                errors.append(("buffer", convert._scratch.buf.numel()))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(o,)) for o in ([0, 1, 2, 3], [3, 2, 1, 0])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
