"""smdebug scripts and custom rules, written in the style of smdebug's public examples, run with
only the import line changed (`tensortap.compat.smdebug`); values are checked against copies the
test takes through the framework itself."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensortap as tt

torch = pytest.importorskip("torch", reason="torch is not installed in this venv")

import tensortap.compat.smdebug.pytorch as smd  # noqa: E402  (was: import smdebug.pytorch as smd)
from tensortap.compat.smdebug.exceptions import (NoCounterpart, NoMoreData,  # noqa: E402
                                                 RuleEvaluationConditionMet, TensorUnavailableForStep)
from tensortap.compat.smdebug.rules import Rule, invoke_rule  # noqa: E402
from tensortap.compat.smdebug.trials import create_trial  # noqa: E402

nn = torch.nn
torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


def train(out_dir, steps=12, lr=0.5, hook_kwargs=None, rule=None):
    """An smdebug-style PyTorch script; returns what the model held at each step, copied by torch."""
    torch.manual_seed(0)
    net = Net()
    hook = smd.Hook(out_dir=out_dir, **(hook_kwargs or dict(
        include_collections=["weights", "gradients", "relu_activations"],
        save_config=smd.SaveConfig(save_interval=2))))
    hook.register_module(net)
    criterion = nn.CrossEntropyLoss()
    hook.register_loss(criterion)
    hook.get_collection("relu_activations").include("relu_output")  # smdebug's spelling: relu_output_0
    if rule is not None:
        hook.add_rule(*rule[:1], action="stop_training", **rule[1])
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 10, generator=g), torch.randint(0, 3, (64,), generator=g)
    snaps = {}
    try:
        for step in range(steps):
            hook.set_mode(smd.modes.TRAIN)
            xb, yb = x[(step * 8) % 64:(step * 8) % 64 + 8], y[(step * 8) % 64:(step * 8) % 64 + 8]
            w = net.fc1.weight.detach().clone()
            opt.zero_grad()
            out = net(xb)
            loss = criterion(out, yb)
            loss.backward()
            snaps[step] = {"w": w.numpy(), "g": net.fc1.weight.grad.detach().clone().numpy(),
                           "loss": loss.detach().numpy().copy()}
            hook.save_scalar("accuracy", float((out.argmax(1) == yb).float().mean()), sm_metric=True)
            hook.save_tensor("labels", yb, collections_to_write="labels")
            opt.step()
    except tt.StopTraining:
        pass
    hook.close()
    return snaps


class GradientNormAbove(Rule):
    """An smdebug custom rule: fires when the L2 norm of fc1's weight gradient exceeds a threshold."""

    def __init__(self, base_trial, threshold=1.0):
        super().__init__(base_trial)
        self.threshold = float(threshold)

    def set_required_tensors(self, step):
        for name in self.base_trial.tensor_names(regex="gradient/.*fc1.weight"):  # smdebug's spelling
            self.req_tensors.add(name, steps=[step])

    def invoke_at_step(self, step):
        for t in self.req_tensors.get():
            if t.reduction_value(step, "l2") > self.threshold:
                return True
        return False


def test_pytorch_script_with_the_import_changed(tmp_path):
    out = str(tmp_path / "run")
    snaps = train(out)
    trial = create_trial(out)
    assert trial.steps() == list(range(12))  # scalars are saved every step; tensors every 2nd
    g = trial.tensor("gradient/Net_fc1.weight")  # smdebug's spelling of gradients/fc1.weight
    assert g.steps() == [0, 2, 4, 6, 8, 10]
    for s in g.steps():
        assert g.value(s).tobytes() == snaps[s]["g"].tobytes()
        assert trial.tensor("fc1.weight").value(s).tobytes() == snaps[s]["w"].tobytes()
        assert trial.tensor("loss").value(s).tobytes() == snaps[s]["loss"].tobytes()
        # a reduction that was not saved is computed from the value, as smdebug did
        assert g.reduction_value(s, "l2") == pytest.approx(np.linalg.norm(snaps[s]["g"].astype(np.float64).ravel()))
        assert g.reduction_value(s, "max", abs=True) == pytest.approx(np.abs(snaps[s]["g"]).max())
    assert trial.tensor_names(collection="relu_activations") == ["relu/output_0"]
    # smdebug's spelling matches; with "gradients" included tensortap also keeps the gradient of a saved output
    assert trial.tensor_names(regex="relu_output") == ["gradients/relu/output_0", "relu/output_0"]
    assert trial.tensor_names(collection="labels") == ["labels"]
    assert trial.tensor("labels").steps() == [0, 2, 4, 6, 8, 10]  # at the step it was saved in (1.0.34: one late)
    assert trial.tensor("accuracy").steps() == list(range(12))
    with pytest.raises(TensorUnavailableForStep):
        g.value(1)
    assert trial.has_passed_step(11).name == "AVAILABLE" and trial.has_passed_step(12).name == "UNAVAILABLE"


def test_custom_rule_offline(tmp_path):
    out = str(tmp_path / "run")
    snaps = train(out, hook_kwargs=dict(include_collections=["gradients"], save_config=smd.SaveConfig(save_interval=1)))
    norms = {s: np.linalg.norm(snaps[s]["g"].astype(np.float64)) for s in snaps}
    threshold = float(np.median(list(norms.values())))
    first = min(s for s in norms if norms[s] > threshold)
    trial = create_trial(out)
    with pytest.raises(RuleEvaluationConditionMet) as e:
        invoke_rule(GradientNormAbove(trial, threshold=threshold), start_step=0, end_step=None, raise_eval_cond=True)
    assert e.value.step == first
    # without raise_eval_cond the rule runs to the end of the finished run, where smdebug raised NoMoreData
    with pytest.raises(NoMoreData):
        invoke_rule(GradientNormAbove(trial, threshold=threshold))
    invoke_rule(GradientNormAbove(trial, threshold=threshold), start_step=2, end_step=6)  # ends quietly
    # tensortap's own machinery evaluates it too: fired exactly where the reference norm is above
    from tensortap.compat.smdebug.rules import SmdebugRule

    res = tt.invoke_rule(SmdebugRule(GradientNormAbove, threshold=threshold), tt.create_trial(out))
    assert [r.step for r in res if r.fired] == [s for s in sorted(norms) if norms[s] > threshold]


def test_custom_rule_live_stops_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "thread")
    out = str(tmp_path / "run")
    snaps = train(out, steps=400, lr=0.1, rule=(GradientNormAbove, {"threshold": 0.0}))
    assert len(snaps) < 400  # stopped early
    fired = [r for r in tt.create_trial(out).rule_results() if r["fired"]]
    assert fired and fired[0]["rule"] == "GradientNormAbove" and fired[0]["step"] == 0


RULE_FILE = """\
from tensortap.compat.smdebug.rules.rule import Rule


class LossAbove(Rule):
    def __init__(self, base_trial, threshold=10.0):
        super().__init__(base_trial)
        self.threshold = float(threshold)

    def invoke_at_step(self, step):
        return float(self.base_trial.tensor("loss").value(step)) > self.threshold
"""


def test_custom_rule_from_the_command_line(tmp_path):
    out = str(tmp_path / "run")
    snaps = train(out)
    f = tmp_path / "my_rule.py"
    f.write_text(RULE_FILE)
    threshold = float(np.median([float(snaps[s]["loss"]) for s in range(0, 12, 2)]))
    want = [s for s in range(0, 12, 2) if float(snaps[s]["loss"]) > threshold]

    def rules_run(*args):
        return subprocess.run([sys.executable, "-m", "tensortap", "rules", "run", out, "--rule-file", str(f),
                               "--rule-class", "LossAbove", *args], capture_output=True, text=True, timeout=120)

    r = rules_run("--param", f"threshold={threshold}")
    assert r.returncode == 1, r.stderr
    assert [int(line.split()[2].rstrip(":")) for line in r.stdout.splitlines() if line.startswith("FIRED")] == want
    assert rules_run("--param", "threshold=1e9").returncode == 0
    r = rules_run("--param", "treshold=1")
    assert r.returncode == 2 and 'has no parameter \'treshold\'. Did you mean "threshold"?' in r.stderr


def test_json_hook_configuration_and_get_hook(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    cfg = tmp_path / "debughookconfig.json"
    cfg.write_text(json.dumps({"LocalPath": out, "HookParameters": {"save_interval": "3"},
                               "CollectionConfigurations": [{"CollectionName": "weights"},
                                                            {"CollectionName": "gradients",
                                                             "CollectionParameters": {"save_interval": "4"}}]}))
    monkeypatch.setenv("SMDEBUG_CONFIG_FILE_PATH", str(cfg))
    smd.del_hook()
    assert smd.get_hook() is None
    hook = smd.get_hook(create_if_not_exists=True)
    assert isinstance(hook, smd.Hook) and smd.get_hook() is hook
    torch.manual_seed(0)
    net = Net()
    hook.register_module(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(9):
        opt.zero_grad()
        net(torch.randn(4, 10)).sum().backward()
        opt.step()
    hook.close()
    trial = create_trial(out)
    assert trial.tensor("fc1.weight").steps() == [0, 3, 6] and trial.tensor("gradients/fc1.weight").steps() == [0, 4, 8]


def test_what_has_no_counterpart_says_so(tmp_path):
    with pytest.raises(NoCounterpart, match="smdebug.profiler has no counterpart"):
        import tensortap.compat.smdebug.profiler  # noqa: F401
    with pytest.raises(NoCounterpart, match="profiler"):
        create_trial(str(tmp_path), profiler=True)
    with pytest.raises(NoCounterpart, match="SageMaker services"):
        GradientNormAbove.__bases__[0].__init__(GradientNormAbove.__new__(GradientNormAbove), None,
                                                action_str='{"name": "StopTraining"}')
    import tensortap.compat.smdebug.tensorflow as smd_tf

    with pytest.raises(NoCounterpart, match="TF1 sessions and estimators"):
        _ = smd_tf.SessionHook
    with pytest.raises(tt.ConfigError, match="reduction 'prod' has no counterpart"):
        smd.ReductionConfig(reductions=["prod"])


def test_smdebug_json_under_tensortap_run(tmp_path):
    """`tensortap run --config debughookconfig.json`: smdebug's meanings, in an unmodified script."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""\
        import torch
        from torch import nn
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        crit = nn.MSELoss()
        for step in range(12):
            opt.zero_grad()
            crit(net(torch.randn(4, 4)), torch.zeros(4, 2)).backward()
            opt.step()
        """))
    out = str(tmp_path / "run")
    cfg = tmp_path / "debughookconfig.json"
    cfg.write_text(json.dumps({
        "LocalPath": out,
        "HookParameters": {"save_interval": "5", "start_step": "3", "include_regex": "^1/output",
                           "include_workers": "one"},
        "CollectionConfigurations": [{"CollectionName": "weights"},
                                     {"CollectionName": "gradients", "CollectionParameters": {"save_steps": "1,2"}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENSORTAP_")}
    r = subprocess.run([sys.executable, "-m", "tensortap", "run", "--config", str(cfg), "--", sys.executable,
                        str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    trial = tt.create_trial(out)
    assert trial.tensor("0.weight").steps() == [5, 10]  # step % 5 == 0 from start_step 3
    assert trial.tensor("gradients/0.weight").steps() == [1, 2, 5, 10]  # its save_steps, and the hook's interval
    assert trial.tensor("1/output_0").steps() == [5, 10]  # include_regex: collection "default"
    assert trial.tensor("loss").steps() == [5, 10]  # "losses" is always included


def test_collection_calls_module_tensors_and_own_save_config(tmp_path):
    out = str(tmp_path / "run")
    torch.manual_seed(0)
    net = Net()
    hook = smd.Hook(out_dir=out, include_collections=["fc2_inputs", "weights"],
                    save_config=smd.SaveConfig(save_interval=2))
    hook.register_module(net)
    coll = hook.get_collection("fc2_inputs")
    coll.add_module_tensors(net.fc2, inputs=True, outputs=False)
    coll.save_config = {smd.modes.TRAIN: smd.SaveConfigMode(save_interval=3)}  # other modes: the hook's
    hook.get_collection("weights").reduction_config = smd.ReductionConfig(norms=["l2"])
    hook.get_collection("not_included").include("fc1")  # made, but not saved: not in include_collections
    seen = {}
    for step in range(10):
        x = torch.randn(4, 10)
        seen[step] = net.relu(net.fc1(x)).detach().numpy()
        net(x)
    hook.set_mode(smd.modes.EVAL)
    net(torch.randn(4, 10))
    hook.close()
    trial = create_trial(out)
    assert trial.tensor_names(collection="fc2_inputs") == ["fc2/input_0"]
    t = trial.tensor("fc2_input_0")  # smdebug's spelling
    assert t.steps(mode=smd.modes.TRAIN) == [0, 3, 6, 9] and t.steps(mode=smd.modes.EVAL) == [0]
    assert t.value(3).tobytes() == seen[3].tobytes()
    w = trial.tensor("fc1.weight")
    assert w.steps() == [0, 2, 4, 6, 8, 10] and w.reduction_value(2, "l2") > 0
    with pytest.raises(TensorUnavailableForStep):  # reductions only, as asked
        w.value(2)
    assert not trial.tensor_names(collection="not_included")


@pytest.fixture(scope="module")
def spelled_run(tmp_path_factory):
    """An smdebug-style script (hook, collections filled with smdebug's spellings, register_loss,
    save_scalar); returns the run and what torch itself computed at each step."""
    out = str(tmp_path_factory.mktemp("spellings") / "run")
    torch.manual_seed(0)
    net = Net()
    hook = smd.Hook(out_dir=out, include_collections=["weights", "gradients", "losses", "relu_activations",
                                                      "fc1_inputs"], save_config=smd.SaveConfig(save_interval=1))
    hook.register_module(net)
    criterion = nn.CrossEntropyLoss()
    hook.register_loss(criterion)
    hook.get_collection("relu_activations").include("relu_output")
    hook.get_collection("fc1_inputs").include("fc1_input")
    seen = {}
    net.relu.register_forward_hook(lambda m, i, o: seen[max(seen)].update(relu=o.detach().clone().numpy()))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        x, y = torch.randn(8, 10, generator=g), torch.randint(0, 3, (8,), generator=g)
        seen[step] = {"x": x.numpy().copy(), "w": net.fc1.weight.detach().clone().numpy()}
        opt.zero_grad()
        out_ = net(x)
        loss = criterion(out_, y)
        loss.backward()
        acc = float((out_.argmax(1) == y).float().mean())
        hook.save_scalar("accuracy", acc, sm_metric=False)
        seen[step].update(loss=loss.detach().numpy().copy(), g=net.fc1.weight.grad.detach().clone().numpy(), acc=acc)
        opt.step()
    hook.close()
    return out, seen


# smdebug's spelling -> (tensortap's name, what torch computed at a step)
SPELLINGS = {
    "Net_fc1.weight": ("fc1.weight", lambda s: s["w"]),
    "gradient/Net_fc1.weight": ("gradients/fc1.weight", lambda s: s["g"]),
    "relu_output_0": ("relu/output_0", lambda s: s["relu"]),
    "fc1_input_0": ("fc1/input_0", lambda s: s["x"]),
    "CrossEntropyLoss_output_0": ("loss", lambda s: s["loss"]),
    "scalar/accuracy": ("accuracy", lambda s: np.float64(s["acc"])),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_smdebug_spellings_read_the_same_tensor(spelled_run, spelling):
    """Each spelling docs/migrating-from-smdebug.md promises reads the tensor torch computed, in
    tensor() and has_tensor(), and is matched by tensor_names(regex=...)."""
    out, seen = spelled_run
    name, ref = SPELLINGS[spelling]
    trial = create_trial(out)
    assert trial.has_tensor(spelling)
    t = trial.tensor(spelling)
    assert t.name == name and t.steps() == [0, 1, 2, 3]
    for s in t.steps():
        got, want = t.value(s), np.asarray(ref(seen[s]))
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (spelling, s)
    assert name in trial.tensor_names(regex=f"^{re.escape(spelling)}$")


def test_loss_spelling_with_several_losses_names_them(tmp_path):
    out = str(tmp_path / "run")
    torch.manual_seed(0)
    net = Net()
    hook = smd.Hook(out_dir=out, include_collections=["losses"], save_config=smd.SaveConfig(save_interval=1))
    hook.register_module(net)
    ce, mse = nn.CrossEntropyLoss(), nn.MSELoss()
    hook.register_loss(ce)
    hook.register_loss(mse)
    o = net(torch.randn(4, 10))
    ce(o, torch.zeros(4, dtype=torch.long))
    mse(o, torch.zeros(4, 3))
    hook.close()
    trial = create_trial(out)
    assert trial.tensor_names(collection="losses") == ["loss", "loss_1"]
    assert trial.has_tensor("MSELoss_output_0")
    with pytest.raises(tt.ConfigError, match=r"this run holds 2 losses \(loss, loss_1;"):
        trial.tensor("MSELoss_output_0")
    assert not trial.has_tensor("Net_nothing")


@pytest.mark.parametrize("case", ["dry_run", "rank 1 with include_workers='one'"])
def test_a_hook_that_saves_nothing_creates_nothing(tmp_path, monkeypatch, case):
    """smdebug's dry_run, and ranks other than 0 under include_workers="one", write nothing at all:
    nothing may appear on disk, not even the run folder."""
    out = tmp_path / "run"
    if case == "dry_run":
        kw = dict(dry_run=True)
    else:
        monkeypatch.setenv("RANK", "1")
        kw = dict(include_workers="one")
    train(str(out), steps=3, hook_kwargs=dict(include_collections=["weights", "gradients"],
                                              save_config=smd.SaveConfig(save_interval=1), **kw))
    assert not out.exists(), sorted(str(p.relative_to(tmp_path)) for p in out.rglob("*"))
    monkeypatch.delenv("RANK", raising=False)
    smd.Hook(out_dir=str(out)).close()  # and nothing holds the out_dir: a real run may use it now
