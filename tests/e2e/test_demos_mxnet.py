"""The MXNet/Gluon seed demos in --quick mode (skipped where mxnet is not installed, e.g. numpy 2)."""
from __future__ import annotations

import json
import os
import re

from tests.conftest import require

require("mxnet", "tensortap_mxnet", "sklearn", "PIL")

import tensortap as tt  # noqa: E402

from tests.e2e.demo_util import assert_gif, assert_png, run_demo  # noqa: E402


def test_autoencoder_demo(tmp_path):
    out = str(tmp_path / "ae")
    run_demo("autoencoder/train_autoencoder.py", out)
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["last_mse"] < 0.3 * s["first_mse"] and s["last_loss"] < 0.5 * s["first_loss"]   # it learned to reconstruct
    assert s["latent_shape"] == [500, 20]
    assert s["knn_accuracy_last"] > 0.8          # digits cluster in the bottleneck (chance 0.1)
    assert s["frames_captured"] >= 5
    trial = tt.create_trial(s["run"])
    assert len(trial.tensor("labels").steps()) == s["frames_captured"]
    assert_gif(s["gif"])
    assert_png(s["reconstruction"])


def test_bert_attention_demo(tmp_path):
    require("gluonnlp")
    out = str(tmp_path / "bert")
    run_demo("bert_attention/train_bert.py", out)
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["last_loss"] < 0.5 * s["first_loss"]
    assert s["heldout_accuracy"][-1] > 0.8                       # chance is 1/3
    assert len(s["layers"]) == 2 and s["captures"] == 11         # one probe pass before training + 10
    focus = s["cls_attention_on_colour_last_layer"]
    assert focus["last"] > 3 * focus["uniform"] and focus["last"] > focus["first"]   # [CLS] learned where to look
    trial = tt.create_trial(s["run"])
    tokens = trial.tensor("attention/tokens").value(trial.tensor(s["layers"][0]).steps()[-1])
    assert tokens[0, 0] == "[CLS]" and any(t in ("red", "green", "blue") for t in tokens[0])
    html = open(s["html"], encoding="utf-8").read()
    # offline: loads nothing
    assert "<script" in html and not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert_png(s["png"])
