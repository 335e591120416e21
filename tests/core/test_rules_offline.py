"""Offline and tailing evaluation: invoke_rule over a finished run, follow=True over a run a
subprocess is still writing (ends cleanly when it closes), and the `tensortap rules` CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time


import tensortap as tt
from tensortap.cli import main as cli
from tensortap.testing import NumpyMLP, make_data
from tt_rules_helpers import first_fired, mlp_run

R = tt.rules.get

WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import tensortap as tt
    from tensortap.testing import NumpyMLP, make_data
    model = NumpyMLP()
    hook = tt.Hook(sys.argv[1], include_collections=["weights", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model); hook.register_loss(model)
    x, y = make_data(64, seed=1)
    for i in range(int(sys.argv[2])):
        if i == 15:
            model.params["fc2.weight"][1, 1] = np.nan
        model.train_step(x, y, lr=0.1)
        hook.flush()
        time.sleep(0.05)
    hook.close()
""")


def test_offline_look_back_reads_each_saved_value_once(run_dir, monkeypatch):
    """invoke_rule keeps the values of the last saved steps (not step numbers) as live rules do:
    saved every 10 steps, unchanged_tensor's look at the two saved steps before hits memory."""
    from collections import Counter

    from tensortap.trial import Tensor, Trial

    hook = tt.Hook(run_dir, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=10))
    model = NumpyMLP()
    hook.register(model)
    x, y = make_data(64, seed=1)
    for _ in range(60):
        model.train_step(x, y, lr=0.1)
    hook.close()
    reads: Counter = Counter()
    value, values_at = Tensor.value, Trial.values_at

    def counted_value(self, step, mode=None, worker=None):
        reads[(self.name, step)] += 1
        return value(self, step, mode, worker)

    def counted_values_at(self, names, step, mode=None, worker=None):
        got = values_at(self, names, step, mode, worker)
        reads.update((n, step) for n in got)
        return got

    monkeypatch.setattr(Tensor, "value", counted_value)
    monkeypatch.setattr(Trial, "values_at", counted_values_at)
    res = tt.invoke_rule(R("unchanged_tensor")(collection_names="weights", num_steps=3), tt.create_trial(run_dir))
    assert [r.step for r in res] == [0, 10, 20, 30, 40, 50] and all(r.checked == 2 for r in res[2:])
    assert len(reads) == 6 * 2, reads  # fc1.weight and fc2.weight at six saved steps
    assert max(reads.values()) == 1, [k for k, n in reads.items() if n > 1]


def test_invoke_rule_range_and_missing_steps(run_url):
    mlp_run(run_url, steps=12, lr=0.0, batch=128, data=make_data(128, seed=1))
    trial = tt.create_trial(run_url)
    res = tt.invoke_rule(R("unchanged_tensor")(), trial, start_step=4, end_step=9)
    assert [r.step for r in res] == [4, 5, 6, 7, 8]
    assert first_fired(res) == 6  # three steps seen from step 4
    assert all(r.rule == "unchanged_tensor" for r in res)
    # a step with nothing the rule needs is skipped, not an error
    res = tt.invoke_rule(R("dead_relu")(tensor_regex="nothing_matches"), trial)
    assert res and all(r.skipped and not r.fired for r in res)


def test_follow_a_run_written_by_a_subprocess(run_url):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, run_url, "30"])
    try:
        trial = tt.create_trial(run_url, wait_seconds=60)
        t0 = time.monotonic()
        res = tt.invoke_rule(R("exploding_tensor")(), trial, follow=True, poll=0.1, timeout=120)
        took = time.monotonic() - t0
    finally:
        proc.wait(60)
    assert proc.returncode == 0
    assert [r.step for r in res] == list(range(30)), "every step, each once, then a clean end"
    assert first_fired(res) == 15
    assert trial.is_complete() and took < 100


def test_cli_rules_list(capsys):
    assert cli(["rules", "list", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    names = {r["name"]: r for r in table}
    builtin = ["vanishing_gradient", "exploding_tensor", "loss_not_decreasing", "overfit", "overtraining",
               "dead_relu", "poor_weight_initialization", "saturated_activation", "weight_update_ratio",
               "all_zero", "unchanged_tensor", "tensor_variance", "class_imbalance", "confusion",
               "check_input_images", "nlp_sequence_ratio", "similar_across_runs", "stalled_training"]
    for n in builtin:
        assert names[n]["distribution"] == "tensortap" and names[n]["description"]
    assert names["vanishing_gradient"]["params"] == {"threshold": 1e-7}
    assert names["dead_relu"]["params"]["tensor_regex"] is None  # None: ReLU layers by their recorded class
    assert cli(["rules", "list"]) == 0
    assert "threshold_layer=50.0" in capsys.readouterr().out


def test_cli_rules_run_exit_status(run_url, capsys):
    mlp_run(run_url, steps=12, lr=0.0, batch=128, data=make_data(128, seed=1))
    assert cli(["rules", "run", run_url, "--rule", "vanishing_gradient"]) == 0
    assert cli(["rules", "run", run_url, "--rule", "loss_not_decreasing", "--param", "num_steps=5"]) == 1
    out = capsys.readouterr()
    assert "FIRED step 5:" in out.out and "2 fired, 0 quiet, 10 skipped, first at step 5" in out.err
    assert cli(["rules", "run", run_url, "--rule", "unchanged_tensor", "--param", "collection_names=weights,biases",
                "--param", "num_steps=4", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["first_fired_step"] == 3 and doc["evaluations"] == 12
    # errors: exit 2 with the fix in the message
    assert cli(["rules", "run", run_url, "--rule", "vanishing_gradent"]) == 2
    assert 'Did you mean "vanishing_gradient"' in capsys.readouterr().err
    assert cli(["rules", "run", run_url, "--rule", "vanishing_gradient", "--param", "treshold=1"]) == 2
    assert 'Did you mean "threshold"' in capsys.readouterr().err
    assert cli(["rules", "run", run_url + "-missing", "--rule", "vanishing_gradient"]) == 2
    assert cli(["rules", "run", run_url, "--rule", "tensor_variance"]) == 2


def test_cli_as_a_process_with_follow(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, run_dir, "20"])
    try:
        out = subprocess.run([sys.executable, "-m", "tensortap.cli", "rules", "run", run_dir, "--rule",
                              "exploding_tensor", "--follow", "--json"], capture_output=True, text=True, timeout=120)
    finally:
        proc.wait(60)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["first_fired_step"] == 15 and doc["evaluations"] == 20
