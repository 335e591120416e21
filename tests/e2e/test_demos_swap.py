"""examples/swap_backends.py in --quick mode for each framework installed: the same tensortap code
learns, captures, runs the same rules and renders the same report whichever framework trains."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from tests.e2e.demo_util import run_demo

PLUGIN = {"torch": "tensortap_torch", "tensorflow": "tensortap_tensorflow", "mxnet": "tensortap_mxnet"}


@pytest.mark.parametrize("framework", ["torch", "tensorflow", "mxnet"])
def test_swap_backends(tmp_path, framework):
    for mod in (framework, PLUGIN[framework], "PIL"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"needs {mod} (not installed in this venv)")
    import tensortap as tt

    out = str(tmp_path / "swap")
    run_demo("swap_backends.py", out, "--framework", framework)
    s = json.load(open(os.path.join(out, framework, "summary.json")))
    assert s["last_loss"] < 0.7 * s["first_loss"]
    assert s["accuracy"][-1] > 2 * s["chance"]
    assert s["gradients"] >= 8                     # 4 layers x (kernel, bias), named the framework's way
    trial = tt.create_trial(s["run"])
    recorded = {r["rule"] for r in trial.rule_results()}
    assert {"loss_not_decreasing", "vanishing_gradient", "exploding_tensor"} <= recorded  # the live rules ran
    assert s["rules_fired_offline"]["exploding_tensor"] == 0 and s["rules_fired_offline"]["vanishing_gradient"] == 0
    assert len(trial.tensor("accuracy").steps()) == len(s["accuracy"])
    assert len(trial.tensor("gradcam/conv2/cam").steps()) == len(s["accuracy"])
    html = open(s["report"], encoding="utf-8").read()
    assert "gradcam" in html and "loss_not_decreasing" in html and "<img" in html
