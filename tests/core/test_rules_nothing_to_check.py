"""Every built-in rule and every contrib rule, on a real (numpy MLP) run that lacks what it reads:
each evaluation is skipped with a reason naming the fix, never quiet, and `tensortap rules run`
exits 3 ("nothing to check")."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import pytest

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.testing import NumpyMLP, make_data

ADD = "to include_collections"


def train(run: str, include: Sequence[str], steps: int = 12, loss: bool = False) -> str:
    """SGD on the numpy MLP through the hook, saving only `include` (no loss unless asked)."""
    model = NumpyMLP(seed=0)
    hook = tt.Hook(run, include_collections=list(include), save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    if loss:
        hook.register_loss(model)
    x, y = make_data(256, seed=1)
    for i in range(steps):
        model.train_step(x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16], lr=0.1)
    hook.close()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[str, str]:
    d = tmp_path_factory.mktemp("nothing")
    return {
        "weights": train(str(d / "weights"), ["weights"]),
        "gradients": train(str(d / "gradients"), ["gradients"]),
        "losses": train(str(d / "losses"), ["losses"], loss=True),
        "one_step": train(str(d / "one_step"), ["weights"], steps=1),
        "train_loss": train(str(d / "train_loss"), ["weights", "losses"], loss=True),
    }


#: (rule, parameters, run, words the reason must hold)
CASES = [
    ("vanishing_gradient", {}, "weights", "no parameter gradients saved at this step; add 'gradients' " + ADD),
    ("exploding_tensor", {"collection_names": "gradients"}, "weights", "add 'gradients' " + ADD),
    ("exploding_tensor", {"tensor_regex": "^fc9"}, "weights", "no tensor saved at this step matches tensor_regex"),
    ("loss_not_decreasing", {}, "weights",
     "no losses saved at this step; add 'losses' " + ADD + " and record the loss"),
    ("overfit", {}, "weights", "add 'losses' " + ADD),
    ("overfit", {}, "train_loss", "no EVAL step saved so far: evaluate with hook.set_mode(tt.modes.EVAL)"),
    ("overtraining", {}, "weights", "add 'losses' " + ADD),
    ("dead_relu", {}, "weights", "no saved tensor is the output of a ReLU layer; add 'outputs' " + ADD),
    ("poor_weight_initialization", {}, "weights", "add 'inputs' " + ADD),
    ("saturated_activation", {}, "weights", "add 'inputs' " + ADD),
    ("weight_update_ratio", {}, "gradients", "no weights saved at this step; add 'weights' " + ADD),
    ("all_zero", {}, "losses", "add 'weights' " + ADD),
    ("unchanged_tensor", {}, "losses", "add 'outputs' " + ADD),
    ("tensor_variance", {"max_threshold": 1.0, "collection_names": "gradients"}, "weights", "add 'gradients' " + ADD),
    ("class_imbalance", {}, "weights", "hook.save_tensor('labels', y, collections=['labels'])"),
    ("confusion", {}, "weights", "no labels and predictions at this step"),
    ("check_input_images", {}, "weights", "or 4 channels on axis 1; add 'inputs' " + ADD),
    ("nlp_sequence_ratio", {}, "weights", "add 'inputs' " + ADD),
    ("similar_across_runs", {"other_trial": "gradients"}, "weights", "is saved at step"),
    ("stalled_training", {}, "one_step", "first saved step: no earlier step to measure the gap from"),
    # contrib/tensortap-rules-health and contrib/tensortap-pruning, found through their entry points
    ("gradient_snr", {}, "weights", "add 'gradients' " + ADD),
    ("gradient_norm_spike", {}, "weights", "add 'gradients' " + ADD),
    ("update_size_trend", {}, "gradients", "add 'weights' " + ADD),
    ("pruning_accuracy", {}, "weights", "no 'pruning/accuracy' saved at this step"),
]


def test_every_rule_has_a_case():
    builtin = {r.name for r in __import__("tensortap.rules.builtin", fromlist=["BUILTIN_RULES"]).BUILTIN_RULES}
    assert len(builtin) == 18 and builtin <= {c[0] for c in CASES}
    for contrib in ("gradient_snr", "gradient_norm_spike", "update_size_trend", "pruning_accuracy"):
        assert contrib in tt.rules.list()


@pytest.mark.parametrize("name,params,run,why", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_nothing_to_check_is_skipped_with_the_fix(runs, capsys, name, params, run, why):
    params = {k: runs[v] if k == "other_trial" else v for k, v in params.items()}
    res = tt.invoke_rule(tt.rules.get(name)(**params), tt.create_trial(runs[run]))
    assert res, "no evaluation at all"
    assert {r.outcome for r in res} == {"skipped"}, [(r.step, r.outcome, r.message) for r in res][:3]
    assert all(r.skipped and not r.fired and r.checked == 0 for r in res)
    assert any(why in r.message for r in res), res[-1].message
    args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    assert cli(["rules", "run", runs[run], "--rule", name, *args]) == 3
    err = capsys.readouterr().err
    assert f"0 fired, 0 quiet, {len(res)} skipped" in err and "skipped: checked nothing at any step: " in err


def test_the_same_rules_are_quiet_or_fire_when_the_data_is_there(runs, tmp_path):
    """Exit 0 needs data: the rules above, on a run that saves what they read, check it."""
    run = train(str(tmp_path / "all"), ["weights", "gradients", "inputs", "outputs", "losses"], loss=True)
    for name, params in (("vanishing_gradient", {}), ("exploding_tensor", {"collection_names": "gradients"}),
                         ("weight_update_ratio", {}), ("all_zero", {}), ("unchanged_tensor", {}),
                         ("overtraining", {"patience_train": 100}), ("gradient_norm_spike", {"factor": 1e6})):
        res = tt.invoke_rule(tt.rules.get(name)(**params), tt.create_trial(run))
        quiet = [r for r in res if r.outcome == "quiet"]
        assert quiet and all(r.checked > 0 for r in quiet) and not any(r.fired for r in res), name
        args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
        assert cli(["rules", "run", run, "--rule", name, *args]) == 0, name


def test_a_quiet_rule_that_read_nothing_is_skipped_for_free(tmp_path):
    """A third-party rule that returns False without reading a tensor through the trial is
    skipped with its declared needs as the reason; one that reads is quiet with the count."""
    from tensortap.rules import Need, Rule, RuleResult

    class Reads(Rule):
        name = "reads_weights"
        needs = (Need("weights"),)

        def invoke_at_step(self, trial, step):
            vals = [trial.tensor(n).value(step) for n in trial.tensor_names(collection="weights", step=step)]
            return any(np.abs(v).max() > 1e6 for v in vals), "big weights"

    class ReadsReductions(Rule):
        name = "reads_reductions"

        def invoke_at_step(self, trial, step):
            return trial.tensor("fc1.weight").reduction_value(step, "l2") > 1e6

    class Explicit(Rule):
        name = "explicit"

        def invoke_at_step(self, trial, step):  # checks step times, not tensors: says so
            return RuleResult(self.name, step, False, "clock fine", checked=1)

    weights = train(str(tmp_path / "w"), ["weights"], steps=3)
    grads = train(str(tmp_path / "g"), ["gradients"], steps=3)
    assert [(r.outcome, r.checked) for r in tt.invoke_rule(Reads(), tt.create_trial(weights))] == [("quiet", 2)] * 3
    res = tt.invoke_rule(Reads(), tt.create_trial(grads))
    assert [r.outcome for r in res] == ["skipped"] * 3
    assert res[0].message == "skipped: no weights saved at this step; add 'weights' to include_collections"
    # the direct call (no invoke_rule) counts too
    assert Reads().invoke(tt.create_trial(grads), 0).outcome == "skipped"
    assert Explicit().invoke(tt.create_trial(grads), 0).outcome == "quiet"
    red = str(tmp_path / "r")
    hook = tt.Hook(red, include_collections=["weights"], reduction_config=tt.ReductionConfig(reductions=["l2"]),
                   save_config=tt.SaveConfig(save_interval=1))
    model = NumpyMLP(seed=0)
    hook.register(model)
    x, y = make_data(32)
    model.train_step(x, y)
    hook.close()
    got = ReadsReductions().invoke(tt.create_trial(red), 0)
    assert got.outcome == "quiet" and got.checked == 1


def test_the_walkthrough_rule_skips_a_run_without_weights(tmp_path):
    """docs/writing-a-rule-plugin.md's big_weights, unchanged: on a run that saves no weights it
    reads nothing, so every evaluation is skipped (it would have been quiet, "nothing fired")."""
    from test_rules_plugin_walkthrough import doc_files

    space: dict = {}
    exec(compile(doc_files()["big-weights/big_weights.py"], "big_weights.py", "exec"), space)
    run = train(str(tmp_path / "g"), ["gradients"], steps=3)
    res = tt.invoke_rule(space["BigWeights"](), tt.create_trial(run))
    assert [(r.outcome, r.checked) for r in res] == [("skipped", 0)] * 3
    assert res[0].message == ("skipped: found no tensor to check (trial.tensor_names(step=...) lists what was saved "
                              "at a step)")
    assert [r.outcome for r in tt.invoke_rule(space["BigWeights"](), tt.create_trial(train(
        str(tmp_path / "w"), ["weights"], steps=3)))] == ["quiet"] * 3
