"""tensortap-tensorflow states the TensorFlow and Keras versions it supports and checks them when it
loads TensorFlow: a tensorflow outside its range gets one warning and fit goes on; Keras 2, with
which nothing can be captured, is an error naming the fix; inside the ranges, nothing."""
from __future__ import annotations

from tests.conftest import require

require("tensorflow", "keras")

import tensortap  # noqa: E402
from tests.version_check import HOOK_ARGS, expected_warning, run_with_versions, version_warnings  # noqa: E402

FIT = """
import sys, numpy as np, keras, tensortap as tt
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
hook = tt.Hook(HOOK_ARGS)
try:
    callback = hook.keras_callback()
except tt.ConfigError as e:
    print("ConfigError:", e)
    sys.exit(3)
x, y = np.random.default_rng(0).normal(size=(48, 8)).astype("float32"), np.arange(48) % 3
model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
hook.register(model)  # the adapter again: still one message
hook.close()
trial = tt.create_trial(sys.argv[1])
print("steps", trial.steps(), len(trial.tensor_names(collection="gradients")))
""".replace("HOOK_ARGS", HOOK_ARGS)


def test_a_tensorflow_outside_the_range_gets_one_warning_and_fit_goes_on(tmp_path):
    r = run_with_versions(FIT, {"tensorflow": "2.15.1"}, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [expected_warning("tensortap-tensorflow", "tensorflow", ">=2.16,<3", "2.15.1")]
    assert "steps [0, 1, 2] 4" in r.stdout


def test_keras_2_is_an_error_that_names_the_fix(tmp_path):
    r = run_with_versions(FIT, {"keras": "2.15.0"}, str(tmp_path / "run"))
    assert r.returncode == 3, r.stderr[-3000:]
    assert r.stdout.strip() == (
        f"ConfigError: tensortap-tensorflow {tensortap.__version__} cannot work here: it needs keras >=3, but keras "
        "2.15.0 is installed. Install a supported version: pip install 'keras>=3,<4'")


def test_the_installed_tensorflow_and_keras_are_in_the_range_and_nothing_is_said(tmp_path):
    r = run_with_versions(FIT, {}, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [], r.stderr
    assert "steps [0, 1, 2] 4" in r.stdout
