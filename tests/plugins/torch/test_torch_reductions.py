"""Reductions of torch tensors: computed off the training thread from snapshots, one packed record
per tensor and step, equal to reduce_numpy of what the step really used, whatever the optimizer,
gradient clipping or the user's loop does to the tensors afterwards."""
from tests.conftest import require

require("torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.reductions import REDUCTIONS, reduce_numpy  # noqa: E402

torch.set_num_threads(1)
ALL = list(REDUCTIONS)


@pytest.fixture(params=[None, True, "segmented"], ids=["cpu-default", "off-thread", "segmented"])
def where(request, monkeypatch):
    """Every reduction path: CPU tensors reduce on the training thread by default; the snapshot +
    background-thread path (the default for accelerator tensors) is forced on the CPU here, once
    with the per-tensor passes and once with the segmented passes an accelerator uses for many
    tensors (`convert._segment_passes`)."""
    from tensortap_torch import convert
    from tensortap_torch.adapter import TorchAdapter

    monkeypatch.setattr(TorchAdapter, "reduce_off_thread", None if request.param is None else True)
    monkeypatch.setattr(convert, "CPU_AS_ACCELERATOR", request.param == "segmented")
    return request.param


def _train(run_dir, steps, rc, clip=False, zero_in_place=False, dtype=torch.float32):
    """Train a small MLP; return what each step's forward used and backward produced (copied
    independently of tensortap, before the optimizer and clipping change them in place)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
    hook = tt.Hook(run_dir, include_collections=["weights", "biases", "gradients", "losses"],
                   reduction_config=rc, save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    seen = {}
    for s in range(steps):
        x, y = torch.randn(8, 6, generator=g).to(dtype), torch.randint(0, 3, (8,), generator=g)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad(set_to_none=not zero_in_place)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        seen[s] = dict(params, **{f"gradients/{n}": p.grad.clone() for n, p in model.named_parameters()})
        if clip:  # in place, after the hook saw the gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
        opt.step()  # in place: the snapshot, not the parameter, holds step s's values
    hook.close()
    return seen, hook


@pytest.mark.parametrize("clip,zero_in_place", [(False, False), (True, True)])
def test_reductions_are_those_of_what_each_step_used(run_dir, clip, zero_in_place, where):
    rc = tt.ReductionConfig(reductions=ALL, histogram_bins=6)
    seen, hook = _train(run_dir, 5, rc, clip=clip, zero_in_place=zero_in_place)
    assert not hook.errors
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 1, 2, 3, 4]
    for s, tensors in seen.items():
        for name, t in tensors.items():
            want = reduce_numpy(t.numpy(), ALL, 6)
            got = trial.tensor(name).reduction_values(s)
            for r in ALL:
                g = np.concatenate(got[r]) if r == "histogram" else got[r]
                # float32 sums accumulate in float32 (convert.py): off by ~1e-7 of the values' scale
                # (a gradient's mean of exactly ~0 is not relatively exact), 2e-6 allowed
                scale = 2e-6 * float(np.abs(t.numpy()).max())
                np.testing.assert_allclose(g, want[r], rtol=2e-6, atol=scale, err_msg=f"{name} step {s} {r}")
    for r in trial._readers():  # one packed record per tensor
        kinds = [k for (n, k) in r.nid_of if n == "0.weight"]
        assert kinds == ["reductions:" + ",".join(ALL)]


def test_float64_and_half_parameters(run_dir, where):
    rc = tt.ReductionConfig(reductions=["min", "max", "mean", "std", "l2"])
    seen, _ = _train(run_dir, 2, rc, dtype=torch.float64)
    t = tt.create_trial(run_dir).tensor("2.weight")
    want = reduce_numpy(seen[1]["2.weight"].numpy(), rc.reductions)
    assert t.reduction_value(1, "std") == pytest.approx(float(want["std"]), rel=1e-12)
    from tensortap_torch.convert import reduce_torch

    h = torch.randn(50, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    got, want = reduce_torch(h, ALL, 5), reduce_numpy(h.float().numpy(), ALL, 5)
    for r in ALL:
        np.testing.assert_allclose(got[r], want[r], rtol=2e-6, err_msg=r)


def test_at_most_one_step_waits_for_its_reductions(run_dir, where):
    """Step s reaches the writer at the latest when step s+2 begins (and at flush/close)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    hook = tt.Hook(run_dir, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1),
                   reduction_config=tt.ReductionConfig(reductions=["l2"]))
    hook.register(model)
    for _ in range(3):  # steps 0, 1, 2 begin
        model(torch.randn(1, 4))
    hook.writer.flush()
    assert 0 in tt.create_trial(run_dir).steps()
    hook.flush()
    assert tt.create_trial(run_dir).steps() == [0, 1, 2]
    hook.close()


def test_raw_values_and_reductions_together(run_dir, where):
    rc = tt.ReductionConfig(reductions=["mean", "l2"], save_raw_tensor=True)
    seen, _ = _train(run_dir, 3, rc)
    t = tt.create_trial(run_dir).tensor("gradients/0.weight")
    assert np.array_equal(t.value(2), seen[2]["gradients/0.weight"].numpy())
    assert t.reduction_value(2, "l2") == pytest.approx(float(seen[2]["gradients/0.weight"].double().norm()), rel=1e-6)


@pytest.mark.parametrize("how", ["per-tensor", "segmented", "segmented-split"])
def test_a_mixed_batch_reduces_like_numpy_item_by_item(how, monkeypatch):
    """reduce_work over one batch mixing what a step can hold (float32 of many sizes, NaN and inf,
    float64, an integer tensor, an empty one, a one-value loss, a bfloat16): every reduction of
    every item equals reduce_numpy's, whichever way the batch is split into passes (the
    accelerator's segmented passes forced on the CPU; "split": groups capped at 60 values, so
    the bigger tensors go alone and the rest form several groups)."""
    from tensortap.reductions import canonical, pack
    from tensortap_torch import convert

    monkeypatch.setattr(convert, "CPU_AS_ACCELERATOR", how != "per-tensor")
    if how == "segmented-split":
        monkeypatch.setattr(convert, "SEGMENT_MAX_VALUES", 60)
    g = torch.Generator().manual_seed(3)
    nan_inf = torch.randn(50, generator=g)
    nan_inf[7], nan_inf[20] = float("nan"), float("inf")
    only_inf = torch.randn(9, generator=g)
    only_inf[0] = float("-inf")
    tensors = [torch.randn(300, 40, generator=g), torch.randn(17, generator=g) + 5.0, nan_inf,
               torch.randn(80_000, generator=g, dtype=torch.float64), torch.randint(-3, 4, (30,), generator=g),
               torch.zeros(0), torch.tensor(2.5), only_inf, torch.randn(5, 4, generator=g).to(torch.bfloat16),
               torch.randn(1000, generator=g).abs(), torch.randn(3, generator=g, dtype=torch.float64),
               torch.randn(2, 2, generator=g, dtype=torch.float64), torch.full((6,), 1.0), torch.randn(11, generator=g),
               torch.randn(40, generator=g, dtype=torch.float64)]
    names = canonical(ALL)
    items = [convert.work(t) for t in tensors]
    if how == "segmented-split":
        groups = convert._segment_groups(items, [None] * len(items))
        assert len(groups) >= 2 and all(sum(items[i][0].numel() for i in g) <= 60 for g in groups), groups
    got = convert.reduce_work(items, names, 16)
    for t, vec in zip(tensors, got):
        want = pack(reduce_numpy(convert.to_numpy(t), names, 16), names)
        np.testing.assert_allclose(vec, want, rtol=2e-6, atol=1e-9, equal_nan=True,
                                   err_msg=f"{t.dtype} {tuple(t.shape)}")


def test_reducer_runs_jobs_inline_once_closed():
    from tensortap_torch.reducer import Reducer

    r = Reducer()
    w = torch.arange(6.0)
    (h,) = r.add([w], ("max", "l2"), 64)
    r.submit_open()
    assert h.result()[0] == 5.0
    r.close()
    (h2,) = r.add([w], ("max",), 64)
    w.add_(100)  # after the snapshot: does not change the result
    assert not h2.done() and h2.result()[0] == 5.0 and h2.done()


def test_copy_pool_reuses_only_arrays_nobody_holds():
    from tensortap_torch.convert import CopyPool

    pool = CopyPool()
    t = torch.randn(256, 300)  # >= CopyPool.MIN_BYTES
    a = pool.to_numpy(t)
    b = pool.to_numpy(t)
    assert a is not b and np.array_equal(a, t.numpy())
    first = id(a)
    del a  # the writer is done with it
    t.add_(1)
    c = pool.to_numpy(t)
    assert id(c) == first and np.array_equal(c, t.numpy())
    assert not np.array_equal(b, t.numpy())  # b (still held) kept its step's values
    view = c.reshape(-1)  # a view still uses c's memory
    del c
    d = pool.to_numpy(t)
    assert id(d) != first and view.base is not None
    small = torch.randn(3)
    assert pool.to_numpy(small) is not pool.to_numpy(small)


def test_gradient_changed_in_place_later_in_the_same_backward_is_reported_not_saved(run_dir):
    """An optimizer step inside a gradient hook (optimizer-in-backward) zeroing .grad in place
    before the pass ends: tensortap says so instead of saving the zeros as the gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    hook = tt.Hook(run_dir, include_collections=["gradients"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    def step_in_backward(p):  # after tensortap's hook
        p.grad.zero_()

    model[0].weight.register_post_accumulate_grad_hook(step_in_backward)
    model(torch.randn(4, 3)).sum().backward()
    hook.close()
    trial = tt.create_trial(run_dir)
    assert "gradients/0.bias" in trial.tensor_names(step=0)
    assert "gradients/0.weight" not in trial.tensor_names(step=0)
    assert any("gradients/0.weight" in e and "changed in place" in e for e in hook.errors)


def test_optimizer_fused_into_backward_still_saves_the_gradients(run_dir):
    """PyTorch's "optimizer step in backward" recipe: per-parameter hooks, registered before the
    tensortap hook, step an optimizer and drop .grad. tensortap's gradient hooks are added at the
    step boundary yet run first, so the saved gradients are the backward's (checked against an
    un-hooked twin trained the same way) and the weights follow the fused updates."""
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opts = {p: torch.optim.SGD([p], lr=0.1) for p in model.parameters()}
        seen = []

        def step(p):
            seen.append(p.grad.clone())
            opts[p].step()
            opts[p].zero_grad(set_to_none=True)

        for p in model.parameters():
            p.register_post_accumulate_grad_hook(step)
        return model, seen

    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(5, 3, generator=g) for _ in range(3)]
    twin, want = build()
    model, _ = build()
    hook = tt.Hook(run_dir, include_collections=["gradients", "weights"], save_config=tt.SaveConfig(save_steps=[0, 2]))
    hook.register(model)
    for x in xs:
        twin(x).square().sum().backward()
        model(x).square().sum().backward()
    hook.close()
    assert not hook.errors, hook.errors
    trial = tt.create_trial(run_dir)
    names = [f"gradients/{n}" for n, _ in model.named_parameters()]
    for step in (0, 2):  # the twin saw its gradients in the order backward produced them
        got = {n: trial.tensor(n).value(step) for n in names}
        for w in want[4 * step:4 * step + 4]:
            assert any(v.shape == tuple(w.shape) and np.array_equal(v, w.numpy()) for v in got.values())
    for (n, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(p, q), n


def test_the_per_tensor_passes_compute_the_keys_the_pass_table_names():
    """`_pass_tensors` (torch's fused per-tensor ops) and the batched paths, which read
    `convert._PASSES`, must produce the same keys for every pass."""
    from tensortap_torch import convert

    f = torch.randn(10)
    for p, rows in convert._PASSES.items():
        assert tuple(convert._pass_tensors(f, [p])) == tuple(k for k, _, _ in rows), p
        assert tuple(convert._scalar_passes(1.5, [p])) == tuple(k for k, _, _ in rows), p
