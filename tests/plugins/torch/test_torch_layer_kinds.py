"""The torch adapter records each layer's class; rules keyed on a kind of layer (dead_relu,
saturated_activation, poor_weight_initialization) find layers by it, whatever their names, and
say what they cannot see (F.relu inside forward) instead of looking like a pass."""
from tests.conftest import require

require("torch")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.cli import main as cli  # noqa: E402
from tensortap.rules import RuleNeedsWarning, RuleResult  # noqa: E402

torch.set_num_threads(1)
R = tt.rules.get
SAVE = ["weights", "gradients", "outputs", "losses"]


def dead_relu_model() -> nn.Module:
    """The issue's model, with every ReLU unit dead: the first layer's pre-activations are all
    about -100 whatever the input, so no gradient ever revives them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    return model


def train(run, model, steps=6, include=SAVE, rules=(), seed=1):
    """SGD on random data through the registered hook; returns the batches (for references)."""
    hook = tt.Hook(run, include_collections=list(include), save_config=tt.SaveConfig(save_interval=1))
    for r in rules:
        hook.add_rule(r)
    hook.register(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        x = torch.randn(32, 20, generator=g)
        y = torch.randint(0, 2, (32,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hook.record_loss(loss)
        batches.append(x)
    hook.close()
    return batches


def test_issue_case_dead_relu_fires(tmp_path, capsys):
    run = str(tmp_path / "run")
    model = dead_relu_model()
    batches = train(run, model, rules=[R("dead_relu")()])
    # reference outside tensortap: every unit of the ReLU's output is 0 on every batch
    with torch.no_grad():
        assert all(not (model[1](model[0](x)) > 0).any() for x in batches)
    trial = tt.create_trial(run)
    assert trial.tensor_names(collection="outputs") == ["0/output_0", "1/output_0", "2/output_0"]
    assert cli(["rules", "run", run, "--rule", "dead_relu"]) == 1
    assert "6 evaluations: 6 fired, 0 quiet, 0 skipped" in capsys.readouterr().err
    res = tt.invoke_rule(R("dead_relu")(), trial)
    assert [r.outcome for r in res] == ["fired"] * 6
    assert all(r.values["dead_percent"] == {"1/output_0": 100.0} and r.checked == 1 for r in res)
    live = [r for r in trial.rule_results() if r["rule"] == "dead_relu"]
    assert [r["outcome"] for r in live] == ["fired"] * 6 and all(r["checked"] == 1 for r in live)


def test_layer_classes_recorded_once(tmp_path):
    run = str(tmp_path / "run")
    model = dead_relu_model()
    hook = tt.Hook(run, include_collections=SAVE, save_config=tt.SaveConfig(save_interval=1))
    calls = []
    describe = hook.session.describe_layers  # what the adapter describes layers through (tt.Capture)
    hook.session.describe_layers = lambda layers: calls.append(1) or describe(layers)
    hook.register(model)
    for _ in range(10):
        model(torch.randn(4, 20)).sum().backward()
    hook.close()
    assert len(calls) == 1  # at attach, never per step
    trial = tt.create_trial(run)
    layers = trial.layers()
    assert {n: (i.class_name, i.kind) for n, i in layers.items()} == {
        "0": ("torch.nn.modules.linear.Linear", "linear"),
        "1": ("torch.nn.modules.activation.ReLU", "relu"),
        "2": ("torch.nn.modules.linear.Linear", "linear")}
    assert trial.layer_kind("1/output_0") == "relu" and trial.layer_kind("1/input_0") == "relu"
    assert trial.layer_kind("gradients/1/output_0") is None and trial.layer_kind("0.weight") is None
    assert trial.tensor_names(layer_kind="relu") == ["1/output_0"]
    assert trial.tensor_names(layer_kind=["relu", "linear"], step=3) == ["0/output_0", "1/output_0", "2/output_0"]
    assert sum(rec.get("type") == "layers" for r in trial._readers() for rec in r.records) == 1


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(20, 64), nn.Linear(64, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_functional_relu_is_said_not_passed(tmp_path, capsys):
    run = str(tmp_path / "run")
    model = FunctionalReLU()
    with pytest.warns(RuleNeedsWarning, match="no such layer") as got:
        hook = tt.Hook(run, include_collections=SAVE, save_config=tt.SaveConfig(save_interval=1))
        hook.add_rule(R("dead_relu")())
        hook.register(model)
        for _ in range(3):
            model(torch.randn(8, 20)).sum().backward()
        hook.close()
    assert len([w for w in got if issubclass(w.category, RuleNeedsWarning)]) == 1
    assert "F.relu" in str(got[0].message) and "nn.ReLU()" in str(got[0].message)
    assert cli(["rules", "run", run, "--rule", "dead_relu"]) == 3
    err = capsys.readouterr().err
    assert "3 evaluations: 0 fired, 0 quiet, 3 skipped" in err and "skipped: checked nothing at any step: " in err
    res = tt.invoke_rule(R("dead_relu")(), tt.create_trial(run))
    assert all(r.outcome == "skipped" and r.checked == 0 for r in res)
    assert "no saved tensor is the output of a ReLU layer" in res[0].message and "F.relu" in res[0].message
    assert "Linear ×2" in res[0].message
    assert any(e["event"] == "rule_needs" for e in tt.create_trial(run).events())
    # a regex still overrides the default selection
    assert [r.outcome for r in tt.invoke_rule(R("dead_relu")(tensor_regex=r"fc1/output_0"), tt.create_trial(run))] \
        == ["quiet"] * 3


def test_add_rule_warns_once_naming_the_collection(tmp_path):
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["weights", "losses"], save_config=tt.SaveConfig(save_interval=1))
    rule = R("dead_relu")()
    with pytest.warns(RuleNeedsWarning) as got:
        hook.add_rule(rule)
    assert len(got) == 1
    assert str(got[0].message) == ("tensortap: rule dead_relu reads the outputs of ReLU layers, which this hook does "
                                   "not save: add 'outputs' to include_collections")
    assert got[0].filename == __file__  # points at the add_rule call
    model = dead_relu_model()
    hook.register(model)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        model(torch.randn(4, 20)).sum().backward()
        hook.close()
        # what it needs saved: no warning at all
        train(str(tmp_path / "ok"), dead_relu_model(), steps=2, rules=[R("dead_relu")(), R("vanishing_gradient")()])
    assert not [w for w in later if issubclass(w.category, RuleNeedsWarning)]  # once per rule, none when saved
    assert not hook.errors


def test_saturated_activation_thresholds_by_recorded_kind(tmp_path):
    """Pre-activations near +12: saturated for tanh (flat beyond 9.5), not for sigmoid (beyond 17).
    The layers are named "1", so only their recorded class tells which range applies."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(3))

    def run_with(act):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), act(), nn.Linear(16, 2))
        with torch.no_grad():
            model[0].weight.mul_(0.01)
            model[0].bias.fill_(12.0)
        run = str(tmp_path / act.__name__)
        hook = tt.Hook(run, include_collections=["inputs"], save_config=tt.SaveConfig(save_interval=1))
        hook.register(model)
        with torch.no_grad():
            pre = model[0](x)
            model(x)
        hook.close()
        return run, pre.numpy()

    run, pre = run_with(nn.Tanh)
    # reference, in numpy: % of units inside (-9.4999, 9.4999) in fewer than 1 % of the samples
    saturated = float((((np.abs(pre) < 9.4999).mean(axis=0) * 100) < 1.0).mean() * 100)
    assert saturated == 100.0
    res = tt.invoke_rule(R("saturated_activation")(), tt.create_trial(run))
    assert [r.outcome for r in res] == ["fired"] and res[0].values["saturated_percent"] == {"1/input_0": saturated}
    run, pre = run_with(nn.Sigmoid)
    assert float(((pre <= -23.0) | (pre >= 16.99999)).mean()) == 0.0
    res = tt.invoke_rule(R("saturated_activation")(), tt.create_trial(run))
    assert [r.outcome for r in res] == ["quiet"] and res[0].values["saturated_percent"] == {"1/input_0": 0.0}


def test_poor_weight_initialization_finds_relu_inputs_by_kind(tmp_path):
    torch.manual_seed(0)
    layers = []
    for i in range(4):
        layers += [nn.Linear(16 if i == 0 else 64, 64), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(64, 2))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acts, variances = x, []
        for m in model:  # reference: the variance of each ReLU's input, computed in torch
            if isinstance(m, nn.ReLU):
                variances.append(float(acts.double().var(unbiased=False)))
            acts = m(acts)
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["inputs"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    with torch.no_grad():
        model(x)
    hook.close()
    res = tt.invoke_rule(R("poor_weight_initialization")(), tt.create_trial(run))
    assert res[0].fired and res[0].checked == 4
    assert res[0].values["activation_variance_ratio"] == pytest.approx(max(variances) / min(variances), rel=1e-4)


class BrokenNeeds(tt.rules.Rule):
    """A rule whose declaration raises once training runs (the layer check happens then)."""

    name = "broken_needs"
    calls = 0

    def requirements(self):
        BrokenNeeds.calls += 1
        if BrokenNeeds.calls > 1:
            raise RuntimeError("broken declaration")
        return (tt.rules.Need("outputs", ("relu",)),)

    def invoke_at_step(self, trial, step):
        return RuleResult(self.name, step, False, "fine", checked=1)


def test_a_broken_declaration_never_stops_training(tmp_path):
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=SAVE, save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(BrokenNeeds())
    model = dead_relu_model()
    hook.register(model)
    for _ in range(3):
        model(torch.randn(4, 20)).sum().backward()
    hook.close()
    assert tt.create_trial(run).steps() == [0, 1, 2]
    assert any("could not check what the live rules read" in e and "broken declaration" in e for e in hook.errors)
