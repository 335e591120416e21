"""A hook with a reduction_config: rules that read whole tensors are warned about at add_rule when
the hook saves only reductions of what they read (with the fix, save_raw_tensor=True), and
losses / metrics / scalars are stored whole whatever the reduction_config, so loss rules keep
working. A real torch MLP trained on scikit-learn's digits; the loss reference is what torch
computed in the loop."""
from tests.conftest import require

require("torch")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.rules import RuleNeedsWarning  # noqa: E402

torch.set_num_threads(1)
R = tt.rules.get
REDUCTIONS = tt.ReductionConfig(reductions=["mean", "std", "l2"])
FIX = "set save_raw_tensor=True in the hook's reduction_config"


def _digits():
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def train(run: str, reduction_config, rules=(), steps: int = 12, lr: float = 0.1, same_batch: bool = False):
    """A 64-128-10 MLP on digits through the registered hook (every step saved); returns the
    losses torch computed, the (scalar) accuracies and the hook."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    crit = nn.CrossEntropyLoss()
    hook = tt.Hook(run, include_collections=["weights", "gradients", "losses", "scalars"],
                   save_config=tt.SaveConfig(save_interval=1), reduction_config=reduction_config)
    for r in rules:
        hook.add_rule(r, action="log")
    hook.register(model)
    hook.register_loss(crit)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = _digits()
    losses, accs = [], []
    for i in range(steps):
        lo = 0 if same_batch else (i * 128) % 1664
        out = model(x[lo:lo + 128])
        loss = crit(out, y[lo:lo + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = float((out.argmax(1) == y[lo:lo + 128]).float().mean())
        hook.save_scalar("accuracy", acc)
        losses.append(float(loss.detach()))
        accs.append(acc)
    hook.close()
    return losses, accs, hook


def test_loss_and_scalars_are_stored_whole_with_a_reduction_config(tmp_path):
    run = str(tmp_path / "run")
    losses, accs, hook = train(run, REDUCTIONS)
    assert not hook.errors
    trial = tt.create_trial(run)
    loss, acc = trial.tensor("loss"), trial.tensor("accuracy")
    assert loss.steps() == list(range(12)) and acc.steps() == list(range(12))
    for s in range(12):
        assert float(loss.value(s)) == pytest.approx(losses[s], rel=1e-6)  # torch's own loss of the step
        assert float(acc.value(s)) == accs[s]
        assert float(loss.reduction_value(s, "mean")) == pytest.approx(losses[s], rel=1e-6)  # asked for: kept too
    # the rest follows the reduction_config: reductions only
    grad = trial.tensor("gradients/0.weight")
    assert grad.reduction_names(0) and not grad.steps(kind="value")


def test_loss_not_decreasing_still_works_with_a_reduction_config(tmp_path):
    """lr 0 on one batch: the loss never moves, so the rule must fire at every checking step (live)."""
    run = str(tmp_path / "run")
    losses, _, _ = train(run, REDUCTIONS, rules=[R("loss_not_decreasing")(num_steps=4)], lr=0.0, same_batch=True)
    assert len(set(losses)) == 1
    recs = [r for r in tt.create_trial(run).rule_results() if r["rule"] == "loss_not_decreasing"]
    assert [r["step"] for r in recs if r["outcome"] == "fired"] == [4, 8]
    assert not [r for r in recs if "only reductions" in r["message"]]


def test_add_rule_warns_when_only_reductions_are_saved(tmp_path):
    run = str(tmp_path / "run")
    with pytest.warns(RuleNeedsWarning) as got:
        train(run, REDUCTIONS, rules=[R("vanishing_gradient")(), R("loss_not_decreasing")(), R("dead_relu")()],
              steps=3)
    msgs = [str(w.message) for w in got if issubclass(w.category, RuleNeedsWarning)]
    assert msgs[0] == (
        "tensortap: rule vanishing_gradient reads whole tensors (parameter gradients), but this hook saves only "
        "their reductions (mean, std, l2): set save_raw_tensor=True in the hook's reduction_config "
        "(tt.ReductionConfig(reductions=[...], save_raw_tensor=True)), or give collection 'gradients' its own "
        "tt.ReductionConfig(save_raw_tensor=True)")
    assert got[0].filename == __file__  # points at the add_rule call (in train)
    assert not any("loss_not_decreasing" in m for m in msgs)  # losses are always whole
    assert len([m for m in msgs if "vanishing_gradient" in m]) == 1
    # the warning says what the run then shows: the rule had nothing it could read
    res = tt.invoke_rule(R("vanishing_gradient")(), tt.create_trial(run))
    assert res and all(r.skipped for r in res) and "only reductions" in res[0].message
    assert any(e["event"] == "rule_needs" and "save_raw_tensor=True" in e["detail"]
               for e in tt.create_trial(run).events())


def test_no_warning_when_whole_tensors_are_kept(tmp_path):
    keep = tt.ReductionConfig(reductions=["mean"], save_raw_tensor=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuleNeedsWarning)
        train(str(tmp_path / "a"), keep, rules=[R("vanishing_gradient")(), R("weight_update_ratio")()], steps=2)
        train(str(tmp_path / "b"), None, rules=[R("vanishing_gradient")()], steps=2)
        # a regex may pick any tensor: nothing known to warn about
        train(str(tmp_path / "c"), REDUCTIONS, rules=[R("exploding_tensor")(tensor_regex="loss")], steps=2)
    res = tt.invoke_rule(R("vanishing_gradient")(), tt.create_trial(str(tmp_path / "a")))
    assert all(r.outcome == "quiet" for r in res)


def test_a_collection_of_its_own_keeping_whole_tensors_counts(tmp_path):
    """The hook saves reductions only, but collection 'gradients' has its own config keeping values:
    no warning for gradients; weights (reductions only) still warned about."""
    run = str(tmp_path / "run")
    grads = tt.Collection("gradients", reduction_config=tt.ReductionConfig(reductions=["l2"], save_raw_tensor=True))
    hook = tt.Hook(run, include_collections=["weights", grads, "losses"], reduction_config=REDUCTIONS)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        hook.add_rule(R("vanishing_gradient")())
        hook.add_rule(R("weight_update_ratio")())
    msgs = [str(w.message) for w in got if issubclass(w.category, RuleNeedsWarning)]
    assert len(msgs) == 1 and "weight_update_ratio reads whole tensors (weights)" in msgs[0] and FIX in msgs[0]
    hook.close()
