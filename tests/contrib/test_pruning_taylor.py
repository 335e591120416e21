"""tensortap-pruning with a real tt.Hook on torch: the Taylor criterion read back from a run, checked
against direct autograd and a brute-force reference, and the whole prune loop with its rule."""
from __future__ import annotations

from tests.conftest import require

require("torch", "tensortap_torch", "tensortap_pruning", "sklearn")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap_pruning import TaylorPruner, count_params, l2_normalise, layer_scores_from_trial  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Net(nn.Module):
    def __init__(self, w1: int = 6, w2: int = 8) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, w1, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.r2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(w2 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(self.r2(self.c2(self.pool(self.r1(self.c1(x))))))
        return self.fc(torch.flatten(x, 1))


def _digits(n_train: int = 900):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(np.pad(d.images / 16.0, ((0, 0), (4, 4), (4, 4))), dtype=torch.float32)[:, None]
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _direct(model, x, y):
    """Feature maps of r1/r2 and the gradient of the mean loss wrt them, by plain autograd."""
    keep = {}

    def grab(m, i, o, n):
        o.retain_grad()
        keep[n] = o

    hs = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: grab(m, i, o, n)) for n in ("r1", "r2")]
    F.cross_entropy(model(x), y).backward()
    for h in hs:
        h.remove()
    model.zero_grad()
    return {n: (o.detach().numpy(), o.grad.numpy()) for n, o in keep.items()}


@pytest.mark.parametrize("capture", ["reductions", "tensors"])
def test_taylor_from_the_run_equals_direct_autograd(tmp_path, capture):
    torch.manual_seed(0)
    model = Net()
    x, y, _, _ = _digits(64)
    ref = _direct(model, x, y)
    pruner = TaylorPruner(model, x[:4], filters_per_iteration=2, capture=capture)
    assert pruner.tap_layers == ["r1", "r2"]
    hook = pruner.make_hook(str(tmp_path / "run"))
    F.cross_entropy(model(x), y).backward()
    hook.close()
    assert not hook.errors
    trial = tt.create_trial(str(tmp_path / "run"))
    if capture == "tensors":  # whole feature maps and gradients, the criterion computed when reading
        maps = {"r1/output_0", "gradients/r1/output_0", "r2/output_0", "gradients/r2/output_0"}
        assert maps <= set(trial.tensor_names())
        scores = layer_scores_from_trial(trial, ["r1", "r2"])
    else:  # one vector per layer, computed while capturing; no feature map or gradient stored
        assert {"r1/output_0", "r2/output_0"} <= set(trial.tensor_names())
        assert not trial.has_tensor("gradients/r1/output_0")
        scores = {n: trial.tensor(f"{n}/output_0").reduction_value(0, "taylor") for n in ("r1", "r2")}
        with pytest.raises(tt.StepNotFound, match="only reductions"):
            trial.tensor("r1/output_0").value(0)
    for name, (a, g) in ref.items():
        # |spatial mean of a*g| per example, averaged over the batch: written out by hand
        want = np.array([[abs((a[m, k] * g[m, k]).mean()) for k in range(a.shape[1])] for m in range(len(a))]).mean(0)
        np.testing.assert_allclose(scores[name], want, rtol=1e-5, atol=1e-12)
        assert abs(np.linalg.norm(l2_normalise(scores[name])) - 1) < 1e-9


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_taylor_ranking_agrees_with_brute_force_channel_removal():
    """Molchanov's criterion approximates the loss change of removing a feature map; on a small
    trained model its ranking must agree with actually zeroing each channel, example by example."""
    from tensortap_pruning import taylor_scores

    torch.manual_seed(0)
    model = Net(8, 12)
    x, y, _, _ = _digits(600)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(3):
        for i in range(0, 600, 50):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 50]), y[i:i + 50]).backward()
            opt.step()
    xb, yb = x[:200], y[:200]
    ref = _direct(model, xb, yb)
    for layer in ("r1", "r2"):
        a, g = ref[layer]
        taylor = taylor_scores(a, g)
        with torch.no_grad():
            base = F.cross_entropy(model(xb), yb, reduction="none")
            brute = []
            for k in range(a.shape[1]):
                def zero(m, i, o, k=k):
                    o = o.clone()
                    o[:, k] = 0
                    return o
                h = getattr(model, layer).register_forward_hook(zero)
                brute.append(float((F.cross_entropy(model(xb), yb, reduction="none") - base).abs().mean()))
                h.remove()
        rho = _spearman(taylor, np.array(brute))
        assert rho > 0.6, (layer, rho, taylor, brute)


def _accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _train(model, x, y, epochs, hook=None):
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), 50):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[i:i + 50]), y[i:i + 50])
            loss.backward()
            opt.step()
            if hook is not None:
                hook.record_loss(loss.detach())


def test_prune_loop_records_honest_numbers_and_the_rule_stops_it(tmp_path):
    torch.manual_seed(0)
    x, y, xt, yt = _digits()
    model = Net(8, 12)
    _train(model, x, y, 4)
    acc0 = _accuracy(model, xt, yt)
    assert acc0 > 0.7  # it really learned (chance is 0.1)
    pruner = TaylorPruner(model, x[:4], filters_per_iteration=4, min_accuracy=acc0 - 0.15, min_channels=1,
                          capture_interval=3)
    hook = pruner.make_hook(str(tmp_path / "run"))
    measured = []

    def evaluate(m):
        measured.append((_accuracy(m, xt, yt), count_params(m)))
        return measured[-1][0]

    history = pruner.run(lambda m: _train(m, x, y, 1, hook), evaluate, max_iterations=6)
    hook.close()
    assert pruner.stopped and "pruning_accuracy" in pruner.stop_reason
    assert history[-1]["accuracy"] < acc0 - 0.15 <= history[-2]["accuracy"]
    # each prune removed exactly what the plan said, and parameters went down every time
    for step, row in zip(pruner.prune_steps, history):
        available = sum(c - 1 for c in row["channels"].values())  # min_channels=1 per group
        assert sum(step.removed.values()) == min(4, available) and step.params_after < step.params_before
    assert [h["params"] for h in history] == [p for _, p in measured]
    # the final model is the one the last row describes: re-measure it on the held-out data
    assert _accuracy(model, xt, yt) == pytest.approx(history[-1]["accuracy"])
    assert count_params(model) == history[-1]["params"] == pruner.prune_steps[-1].params_after
    assert model(xt[:3]).shape == (3, 10)
    # what the run holds is what the loop measured
    trial = tt.create_trial(str(tmp_path / "run"))
    for key in ("params", "size_mb", "accuracy"):
        t = trial.tensor(f"pruning/{key}")
        assert [float(t.value(s)) for s in t.steps()] == pytest.approx([h[key] for h in history])
    fired = [r for r in trial.rule_results() if r["rule"] == "pruning_accuracy" and r["fired"]]
    assert len(fired) == 1 and fired[0]["step"] == history[-1]["step"]
    # the last model that met the floor comes back intact
    best = pruner.restore_best()
    assert count_params(best) == history[-2]["params"]
    assert _accuracy(best, xt, yt) == pytest.approx(history[-2]["accuracy"])


def test_prune_before_any_capture_says_what_to_do(tmp_path):
    model = Net()
    pruner = TaylorPruner(model, torch.zeros(2, 1, 16, 16))
    with pytest.raises(RuntimeError, match="attach a hook"):
        pruner.prune()
    hook = pruner.make_hook(str(tmp_path / "run"))
    with pytest.raises(RuntimeError, match="train at least one step"):
        pruner.prune()
    hook.close()


def test_rule_is_registered_through_the_entry_point():
    assert "pruning_accuracy" in tt.rules.list()
    assert tt.rules.get("pruning_accuracy").params() == {"threshold": 0.9, "tensor": "pruning/accuracy"}


def _run_bytes(path) -> int:
    import os

    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def test_rankings_from_captured_importance_equal_the_full_tensor_computation(tmp_path):
    """Six training steps, importance captured every 2nd: the ranking the pruner computes from the
    vectors the Hook stored equals the one from plain autograd activation x gradient on the same
    batches (taken by the test's own hooks), and the one from whole captured tensors; the run
    holding only the vectors is a small fraction of the one holding the tensors."""
    x, y, _, _ = _digits(300)
    got, size = {}, {}
    for capture in ("reductions", "tensors"):
        torch.manual_seed(0)
        model = Net(8, 12)
        pruner = TaylorPruner(model, x[:4], capture=capture, capture_interval=2)
        run = tmp_path / capture
        hook = pruner.make_hook(str(run))
        kept: dict = {}
        ref: dict = {"r1": [], "r2": []}

        def grab(m, i, o, n):
            o.retain_grad()
            kept[n] = o  # noqa: B023 (the hooks are removed before the next capture mode)

        hs = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: grab(m, i, o, n)) for n in ("r1", "r2")]
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        for step in range(6):
            xb, yb = x[step * 50:(step + 1) * 50], y[step * 50:(step + 1) * 50]
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            if step % 2 == 0:
                for n, o in kept.items():
                    a, g = o.detach().double().numpy(), o.grad.double().numpy()
                    ref[n].append(np.abs((a * g).reshape(len(a), a.shape[1], -1).mean(2)).mean(0))
            opt.step()
        for h in hs:
            h.remove()
        got[capture] = {pruner.label(g): s for gid, s in pruner.rank().items() for g in pruner.groups if g.gid == gid}
        hook.close()
        assert not hook.errors
        size[capture] = _run_bytes(run)
    want = {layer: l2_normalise(np.mean(v, axis=0)) for layer, v in ref.items()}
    assert set(got["reductions"]) == {"c1", "c2"}
    for capture in got:
        for producer, layer in (("c1", "r1"), ("c2", "r2")):
            np.testing.assert_allclose(got[capture][producer], want[layer], rtol=1e-5)
            assert list(np.argsort(got[capture][producer])) == list(np.argsort(want[layer]))
    assert size["reductions"] * 50 < size["tensors"], size


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        self.c2, self.b2, self.r2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.max_pool2d(self.r1(self.b1(self.c1(x))), 2)
        x = self.r2(self.b2(self.c2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("criterion", ["l1", "bn_scale", "random"])
def test_other_criteria_rank_by_what_they_say(tmp_path, criterion):
    """l1 and bn_scale rank by the weights as the last captured step used them (snapshotted by the
    test itself); random gives a vector in [0, 1) per channel; each prune removes the lowest."""
    torch.manual_seed(0)
    x, y, _, _ = _digits(200)
    model = BNNet()
    with torch.no_grad():
        model.b1.weight.uniform_(0.1, 2.0)
        model.b2.weight.uniform_(-2.0, 2.0)
    pruner = TaylorPruner(model, x[:4], filters_per_iteration=3, criterion=criterion, capture_interval=2)
    hook = pruner.make_hook(str(tmp_path / "run"))
    snap = {}
    model.register_forward_pre_hook(
        lambda m, a: snap.update({k: v.detach().clone() for k, v in m.state_dict().items()}))
    opt = torch.optim.SGD(model.parameters(), 0.05)
    for step in range(5):  # captured at steps 0, 2, 4: the last one's weights are in `snap`
        opt.zero_grad()
        F.cross_entropy(model(x[step * 40:(step + 1) * 40]), y[step * 40:(step + 1) * 40]).backward()
        opt.step()
    scores = {pruner.label(g): s for gid, s in pruner.rank().items() for g in pruner.groups if g.gid == gid}
    assert set(scores) == {"c1", "c2"}  # fc's outputs are the model's: frozen
    if criterion == "random":
        trial = tt.create_trial(str(tmp_path / "run"))
        v = trial.tensor("r2/output_0").reduction_value(4, "random")
        assert v.shape == (8,) and (v >= 0).all() and (v < 1).all() and len(set(v.tolist())) == 8
    else:
        for conv, bn in (("c1", "b1"), ("c2", "b2")):
            w = (snap[f"{conv}.weight"].abs().reshape(len(snap[f"{conv}.weight"]), -1).sum(1) if criterion == "l1"
                 else snap[f"{bn}.weight"].abs()).double().numpy()
            np.testing.assert_allclose(scores[conv], l2_normalise(w), rtol=1e-6)
    step = pruner.prune()
    lowest = sorted((v, k, i) for k, s in scores.items() for i, v in enumerate(s))[:3]
    assert step.channels == {k: sorted(i for _, kk, i in lowest if kk == k) for k in {k for _, k, _ in lowest}}
    hook.close()
    assert not hook.errors and model(x[:2]).shape == (2, 10)
