"""The PyTorch seed demos, end to end in --quick mode: each runs as a user runs it (a subprocess
from the repository root), must really learn, and must leave its run and pictures behind."""
from __future__ import annotations

import json
import os

from tests.conftest import require

require("torch", "tensortap_torch", "sklearn", "matplotlib", "PIL")

import pytest  # noqa: E402

import tensortap as tt  # noqa: E402

from tests.e2e.demo_util import assert_gif, assert_png, run_demo  # noqa: E402


def test_pruning_demo(tmp_path):
    out = str(tmp_path / "pruning")
    stdout = run_demo("pruning/prune.py", out)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["model"] for r in summary["results"]] == ["resnet", "alexnet"]
    for r in summary["results"]:
        assert r["final_loss"] < 0.5 * r["initial_loss"]        # it learned ...
        assert r["initial_accuracy"] > 0.6                      # ... well above chance (0.1), on held-out digits
        h = r["history"]
        assert len(h) >= 2 and all(b["params"] < a["params"] for a, b in zip(h, h[1:]))  # every prune removed some
        assert r["best"]["accuracy"] >= summary["min_accuracy"]
        trial = tt.create_trial(r["run"])
        acc = trial.tensor("pruning/accuracy")
        assert [float(acc.value(s)) for s in acc.steps()] == pytest.approx([x["accuracy"] for x in h])
        taps = trial.tensor_names(collection="pruning_taps")  # the Taylor importance, one vector per step
        assert taps, "the Taylor importance was not captured"
        for n in taps:
            t = trial.tensor(n)
            assert all(t.reduction_names(s) == ["taylor"] for s in t.steps())
        assert not trial.tensor_names(regex=r"^gradients/")  # no feature map gradient stored
        assert r["run_bytes"] < 500_000  # vectors, not feature maps (the old capture: ~100 MB per model)
        if "rule pruning_accuracy" in r["stop_reason"]:          # stopped by the rule: it fired exactly once
            fired = [x for x in trial.rule_results() if x["rule"] == "pruning_accuracy" and x["fired"]]
            assert len(fired) == 1 and h[-1]["accuracy"] < summary["min_accuracy"]
        assert_png(r["plot"])
    assert "resnet:" in stdout and "alexnet:" in stdout


def test_gradcam_demo(tmp_path):
    out = str(tmp_path / "gradcam")
    run_demo("gradcam/train_signs.py", out)
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["last_loss"] < 0.6 * s["first_loss"]
    assert s["held_out_accuracy"][-1] > 2.5 * s["chance"]
    cam = s["cam_mass_on_sign"]
    # the maps moved onto the signs: more of their mass lies on the sign than at the start,
    # and more than a flat map would put there
    assert cam["last"] > cam["first"] and cam["last"] > 1.5 * cam["area"]
    assert_png(s["png"])
    assert_gif(s["gif"])
    trial = tt.create_trial(s["run"])
    assert {"gradcam/layer3/cam", "gradcam/layer3/scores", "gradcam/images"} <= set(trial.tensor_names())
    assert len(trial.tensor("gradcam/layer3/cam").steps()) >= 5
