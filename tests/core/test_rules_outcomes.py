"""Three outcomes everywhere, never two: fired / quiet (checked N) / skipped (why) in RuleResult,
trial.rule_results(), `tensortap ls`, `tensortap rules run` (text, --json, exit status) and the
report; Hook.add_rule warns once when the hook does not save what a rule reads; steps are named
the same way everywhere ("step 26 (eval step 2)")."""
from __future__ import annotations

import io
import json
import logging
import re
import warnings

import numpy as np
import pytest

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.report import build_report
from tensortap.rules import RuleNeedsWarning, RuleResult
from tensortap.rules.actions import ActionContext, StopTrainingAction
from tensortap.rules.results import results_record
from tensortap.testing import NumpyMLP, make_data
from tensortap.zerocode.report import summarize
from tt_rules_helpers import mlp_run

R = tt.rules.get


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Live rules on a run that saves weights, gradients and losses but no layer outputs: one rule
    fires (the loss never moves: lr 0), one is quiet, one has nothing to check (dead_relu)."""
    path = str(tmp_path_factory.mktemp("outcomes") / "run")
    with pytest.warns(RuleNeedsWarning, match="dead_relu reads the outputs of ReLU layers"):
        mlp_run(path, steps=15, lr=0.0, batch=128, data=make_data(128, seed=1),
                include=("weights", "gradients", "losses"),
                rules=[R("loss_not_decreasing")(num_steps=5), R("vanishing_gradient")(), R("dead_relu")()])
    return path


def test_rule_results_say_which_of_three(run):
    recs = tt.create_trial(run).rule_results()
    by = {n: [r for r in recs if r["rule"] == n] for n in ("loss_not_decreasing", "vanishing_gradient", "dead_relu")}
    assert {r["outcome"] for r in by["vanishing_gradient"]} == {"quiet"}
    assert all(r["checked"] == 4 for r in by["vanishing_gradient"])  # the 4 parameter gradients of the MLP
    assert [r["step"] for r in by["loss_not_decreasing"] if r["outcome"] == "fired"] == [5, 10]
    assert {r["outcome"] for r in by["dead_relu"]} == {"skipped"} and len(by["dead_relu"]) == 15
    assert all(r["checked"] == 0 for r in by["dead_relu"])
    assert by["dead_relu"][0]["message"] == ("skipped: no saved tensor is the output of a ReLU layer; add 'outputs' to "
                                             "include_collections")


def test_ls_shows_the_three_outcomes_per_rule(run, capsys):
    assert cli(["ls", run]) == 0
    out = capsys.readouterr().out
    assert "45 evaluations, 2 fired, 15 quiet, 28 skipped (nothing to check)" in out
    assert re.search(r"^  no data  dead_relu: 0 fired, 0 quiet, 15 skipped \(no saved tensor is the output of a "
                     r"ReLU layer; add 'outputs' to include_collections\)$", out, re.M), out
    assert re.search(r"^  quiet    vanishing_gradient: 0 fired, 15 quiet, 0 skipped$", out, re.M), out
    assert re.search(r"^  fired    loss_not_decreasing: 2 fired, 0 quiet, 13 skipped$", out, re.M), out
    assert cli(["ls", run, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    states = {r["rule"]: (r["state"], r["fired"], r["quiet"], r["skipped"], r["checked"]) for r in doc["rules"]}
    assert states == {"dead_relu": ("no data", 0, 0, 15, 0), "vanishing_gradient": ("quiet", 0, 15, 0, 60),
                      "loss_not_decreasing": ("fired", 2, 0, 13, 2)}
    assert any(e["event"] == "rule_needs" for e in doc["events"])


def test_report_has_a_no_data_state_never_green(run, tmp_path):
    page = open(build_report(run, str(tmp_path / "r.html")), encoding="utf-8").read()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"<tr><td>(\w+)</td>.*?</tr>", page)}
    assert "class=nodata" in rows["dead_relu"] and "class=ok" not in rows["dead_relu"]
    assert "no saved tensor is the output of a ReLU layer" in rows["dead_relu"]
    assert "class=ok>quiet</span> (checked 60 tensors)" in rows["vanishing_gradient"]
    assert "class=fired>fired 2×" in rows["loss_not_decreasing"]


def test_rules_run_exit_status_and_json(run, capsys):
    assert cli(["rules", "run", run, "--rule", "vanishing_gradient", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["state"], doc["quiet"], doc["skipped"], doc["checked"]) == ("quiet", 15, 0, 60)
    assert {r["outcome"] for r in doc["results"]} == {"quiet"} and doc["results"][0]["checked"] == 4
    assert cli(["rules", "run", run, "--rule", "dead_relu", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert (doc["state"], doc["skipped"], doc["evaluations"]) == ("no data", 15, 15)
    assert list(doc["skip_reasons"]) == ["no saved tensor is the output of a ReLU layer; add 'outputs' to "
                                         "include_collections"]
    assert cli(["rules", "run", run, "--rule", "dead_relu", "--all"]) == 3
    out = capsys.readouterr()
    assert "skip  step 0: skipped: no saved tensor is the output of a ReLU layer" in out.out
    assert cli(["rules", "run", run, "--rule", "vanishing_gradient", "--all"]) == 0
    assert "quiet step 3 [checked 4]: smallest mean |gradient|" in capsys.readouterr().out
    # nothing in the range asked for: nothing checked either
    assert cli(["rules", "run", run, "--rule", "vanishing_gradient", "--start-step", "100"]) == 3
    assert "no saved step to evaluate" in capsys.readouterr().err


def test_records_written_before_checked_existed_stay_readable(tmp_path):
    path = str(tmp_path / "run")
    hook = tt.Hook(path, include_collections=["losses"])
    hook.begin_step()
    hook.save_tensor("loss", np.float32(1.0), collections=["losses"])
    hook.flush()
    old = {"type": "rules", "time": 1.0, "fields": ["rule", "step", "fired", "message", "values", "skipped"],
           "results": [["a", 0, False, "fine", {}, False], ["b", 0, True, "bad", {}, False],
                       ["c", 0, False, "skipped: no data", {}, True]]}
    hook.writer.submit_record(old)
    hook.writer.submit_record({"type": "rule", "rule": "d", "step": 0, "fired": False, "message": "", "values": {},
                               "skipped": False, "time": 2.0})
    hook.writer.submit_record(results_record([RuleResult("e", 0, False, "fine", checked=3)]))
    hook.close()
    recs = tt.create_trial(path).rule_results()
    assert [(r["rule"], r["outcome"], r["checked"]) for r in recs] == [
        ("a", "quiet", None), ("b", "fired", None), ("c", "skipped", None), ("d", "quiet", None), ("e", "quiet", 3)]


def test_add_rule_warns_once_per_rule_naming_what_to_add(tmp_path):
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights"])
    with pytest.warns(RuleNeedsWarning) as got:
        hook.add_rule(R("vanishing_gradient")())
        hook.add_rule(R("loss_not_decreasing")())
    assert [str(w.message) for w in got] == [
        "tensortap: rule vanishing_gradient reads parameter gradients, which this hook does not save: add "
        "'gradients' to include_collections",
        "tensortap: rule loss_not_decreasing reads losses, which this hook does not save: add 'losses' to "
        "include_collections and record the loss (hook.record_loss(loss) or hook.register_loss(loss_fn); Keras fit "
        "records it)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuleNeedsWarning)
        hook.add_rule(R("weight_update_ratio")())  # reads weights: saved
        hook.add_rule(R("class_imbalance")())  # labels come from save_tensor: nothing to say
        hook.add_rule(R("exploding_tensor")())  # any tensor
    hook.close()


def test_steps_are_named_the_same_way_everywhere(tmp_path, capsys, caplog):
    """Global steps, with the mode's own count where it differs: in rule messages, `rules run`,
    `ls` and the report (an eval loss that never moves, checked every 2 eval steps)."""
    path = str(tmp_path / "run")
    data = make_data(128, seed=1)
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        mlp_run(path, steps=12, lr=0.0, batch=128, data=data, eval_data=data, eval_every=3,
                rules=[(R("loss_not_decreasing")(mode="eval", num_steps=2), "log"), R("class_imbalance")()])
    trial = tt.create_trial(path)
    evals = trial.steps(mode="eval")
    g0, g2 = trial.global_step("eval", 0), trial.global_step("eval", 2)
    assert len(evals) == 4 and g2 > 2
    fired = [r for r in tt.invoke_rule(R("loss_not_decreasing")(mode="eval", num_steps=2), trial) if r.fired]
    assert fired[0].step == g2
    assert f"at step {g0} (eval step 0) -> " in fired[0].message and f"at step {g2} (eval step 2)" in fired[0].message
    assert fired[0].message.startswith("loss did not decrease over 2 eval steps")
    assert fired[0].values["loss"]["from_step"] == g0 and fired[0].values["loss"]["from_mode_step"] == 0
    assert cli(["rules", "run", path, "--rule", "loss_not_decreasing", "--param", "mode=eval", "--param",
                "num_steps=2"]) == 1
    out = capsys.readouterr()
    assert f"FIRED step {g2} (eval step 2): " in out.out and f"first at step {g2} (eval step 2)" in out.err
    assert cli(["ls", path]) == 0
    assert f"  fired    loss_not_decreasing at step {g2} (eval step 2): " in capsys.readouterr().out
    page = open(build_report(path, str(tmp_path / "r.html")), encoding="utf-8").read()
    assert f"<td>step {g2} (eval step 2)</td>" in page
    assert f"step {g2} (eval step 2): loss did not decrease" in page
    # the log action (live) and the stop_training action say it the same way
    logged = [r.getMessage() for r in caplog.records if "fired at" in r.getMessage()]
    assert logged and logged[0].startswith(f"tensortap: rule loss_not_decreasing fired at step {g2} (eval step 2): "
                                           "loss did not decrease"), logged
    hook = tt.Hook(str(tmp_path / "other"))
    StopTrainingAction().run(ActionContext(fired[0].rule, fired[0], hook, trial))
    assert hook.take_stop_request().startswith(f"rule loss_not_decreasing fired at step {g2} (eval step 2): ")
    hook.close()
    # `tensortap run`'s end summary: the same line as `rules run`, a "no data" state with its reason
    stream = io.StringIO()
    assert summarize([{"attached": ["the numpy MLP"]}], path, stream)
    out = stream.getvalue()
    assert f"  fired    loss_not_decreasing: 16 evaluations: 1 fired, 0 quiet, 15 skipped, first at step {g2} " \
           "(eval step 2)\n" in out, out
    assert f"first firing: loss did not decrease over 2 eval steps: loss=1.401 at step {g0} (eval step 0)" in out
    assert "  no data  class_imbalance: 16 evaluations: 0 fired, 0 quiet, 16 skipped: checked nothing at any " \
           "step: no labels at this step (a tensor matching '.*labels'): save them" in out and "(×16)\n" in out
    # a TRAIN step counted the same both ways is just "step N"; one after an eval phase says both
    assert tt.rules.step_label(trial, 1) == "step 1"
    last = trial.global_step("train", 11)
    assert last > 11 and tt.rules.step_label(trial, last) == f"step {last} (train step 11)"


MEAN_ONLY = tt.ReductionConfig(reductions=["mean"])


def _reduced_run(path: str, include, reduction_config=MEAN_ONLY) -> None:
    """12 steps of the numpy MLP saving `include` with the hook's `reduction_config`."""
    model = NumpyMLP(n_in=8, n_hidden=16, n_out=4, seed=0)
    hook = tt.Hook(path, include_collections=include, save_config=tt.SaveConfig(save_interval=1),
                   reduction_config=reduction_config)
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(256, seed=1)
    for i in range(12):
        model.loss(model.forward(x[i * 16:i * 16 + 32]), y[i * 16:i * 16 + 32])
        model.backward()
        model.sgd_step(0.1)
    hook.close()


def test_a_cause_met_at_every_step_is_one_reason_saying_what_to_change(tmp_path, capsys):
    """Only reductions of the weights were saved: the skip reason names no step (so it is counted,
    "(×12)", not listed 12 times) and says what to change in the configuration; doing what it says
    gives the rule its values. (Losses are always stored whole, whatever the reduction_config.)"""
    path = str(tmp_path / "reduced")
    _reduced_run(path, ["weights", "losses"])
    weights = R("exploding_tensor")(collection_names="weights")
    res = tt.invoke_rule(weights, tt.create_trial(path))
    why = ("only reductions of 'fc1.weight' were saved (mean); this rule reads its values: set save_raw_tensor=True in "
           "the hook's reduction_config, or give collection 'weights' its own tt.ReductionConfig(save_raw_tensor=True)")
    assert {r.message for r in res} == {f"skipped: {why}"} and len(res) == 12
    assert cli(["rules", "run", path, "--rule", "exploding_tensor", "--param", "collection_names=weights"]) == 3
    assert f"checked nothing at any step: {why} (×12)\n" in capsys.readouterr().err
    # the trial itself still names the step it was asked for, and what to read instead
    t = tt.create_trial(path).tensor("fc1.weight")
    with pytest.raises(tt.StepNotFound, match=r"only reductions of 'fc1.weight' were saved at step 3: use "
                                              r"reduction_value\(step, name\) with one of \['mean'\]"):
        t.value(3)
    # the fix it names, either way: the rule then checks the weights
    keep = tt.ReductionConfig(reductions=["mean"], save_raw_tensor=True)
    for how, include, config in (("collection", [tt.Collection("weights", reduction_config=keep), "losses"], MEAN_ONLY),
                                 ("hook", ["weights", "losses"], keep)):
        fixed = str(tmp_path / how)
        _reduced_run(fixed, include, config)
        res = tt.invoke_rule(weights, tt.create_trial(fixed))
        assert res and all(r.outcome == "quiet" and r.checked == 2 for r in res), (how, [r.message for r in res][:3])


def test_no_reduction_saved_reads_plainly(tmp_path):
    path = str(tmp_path / "run")
    _reduced_run(path, ["losses"], reduction_config=None)
    t = tt.create_trial(path).tensor("loss")
    with pytest.raises(tt.StepNotFound) as e:
        t.reduction_values(0)
    assert str(e.value) == "no reduction of 'loss' was saved at step 0"
    with pytest.raises(tt.StepNotFound, match=r"^reduction 'l2' of 'loss' was not saved at step 0 \(saved there: "
                                              r"none\)$"):
        t.reduction_value(0, "l2")
