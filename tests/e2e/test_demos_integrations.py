"""The trainer-integration demos, end to end in --quick mode, as a user runs them: examples/hf_bert
(HF Trainer + TransformersCallback) and examples/gradcam --trainer lightning (LightningCallback)."""
from __future__ import annotations

import json
import os
import re

from tests.conftest import require

require("torch", "tensortap_torch", "matplotlib", "PIL")

import tensortap as tt  # noqa: E402

from tests.e2e.demo_util import assert_gif, assert_png, run_demo  # noqa: E402


def test_hf_bert_demo_attention_moves_onto_the_decisive_token(tmp_path, monkeypatch):
    require("transformers", "tokenizers", "accelerate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = str(tmp_path / "hf_bert")
    run_demo("hf_bert/train_bert.py", out)
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["last_loss"] < 0.5 * s["first_loss"] and s["train_steps"] == 150
    assert s["eval_accuracy"][-1] > 0.8                              # chance is 1/3
    assert s["captures"] == 7 and len(s["layers"]) == 2               # evaluation at the start and 6 more
    focus = s["cls_attention_on_colour_last_layer"]
    # [CLS] learned where to look: its attention on the colour word rose, well above a uniform spread
    assert focus["last"] > 2 * focus["first"] and focus["last"] > 3 * focus["uniform"]
    trial = tt.create_trial(s["run"])
    assert s["layers"][0] == "attention/bert.encoder.layer.0.attention.self"
    tokens = trial.tensor("attention/tokens").value(trial.tensor(s["layers"][0]).steps()[-1])
    assert tokens[0, 0] == "[CLS]" and any(t in ("red", "green", "blue") for t in tokens[0])
    html = open(s["html"], encoding="utf-8").read()
    assert "<script" in html and "[CLS]" in html and "No tokens were saved" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)        # offline: loads nothing
    assert os.path.getsize(s["report"]) > 10000
    assert_png(s["png"])


def test_gradcam_lightning_twin(tmp_path):
    require("lightning")
    out = str(tmp_path / "gradcam_lightning")
    run_demo("gradcam/train_signs.py", out, "--trainer", "lightning")
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["trainer"] == "lightning" and s["layer"] == "net.layer3"
    assert s["last_loss"] < 0.6 * s["first_loss"]
    assert s["held_out_accuracy"][-1] > 2.5 * s["chance"]
    cam = s["cam_mass_on_sign"]
    assert cam["last"] > cam["first"] and cam["last"] > 1.5 * cam["area"]     # the maps moved onto the signs
    trial = tt.create_trial(s["run"])
    # Grad-CAM ran during training at each validation (EVAL step): one before fit, 11 during, one after;
    # the sanity check counted none
    assert trial.tensor("gradcam/net.layer3/cam").steps(mode=tt.modes.EVAL) == list(range(13))
    assert {"train_loss"} <= set(trial.tensor_names(collection="losses"))
    assert {"held_out_accuracy", "probe_confidence"} <= set(trial.tensor_names(collection="metrics"))
    assert_png(s["png"])
    assert_gif(s["gif"])
