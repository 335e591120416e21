"""The MXNet/Gluon seed demos in --quick mode (skipped where mxnet is not installed, e.g. numpy 2)."""
from __future__ import annotations

import json
import os

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
