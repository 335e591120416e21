"""tensortap-mxnet states the MXNet (and, for BERT attention, GluonNLP) versions it supports and checks
them when it loads mxnet: outside a range one warning and training goes on; GluonNLP is checked only
where the script imported it; inside the ranges, nothing."""
from __future__ import annotations

from tests.conftest import require

require("mxnet")

from tests.version_check import HOOK_ARGS, expected_warning, run_with_versions, version_warnings  # noqa: E402

TRAIN = """
import sys, mxnet as mx, tensortap as tt
from mxnet import autograd, gluon
mx.random.seed(0)
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Dense(16, activation="relu"), gluon.nn.Dense(3))
net.initialize()
hook = tt.Hook(HOOK_ARGS)
hook.register(net)
hook.register(net)  # registered again: still one message
loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
x, y = mx.nd.random.normal(shape=(32, 8)), mx.nd.array([i % 3 for i in range(32)])
for _ in range(3):
    with autograd.record():
        loss = loss_fn(net(x), y).mean()
    hook.record_loss(loss)
    loss.backward()
    trainer.step(1)
hook.close()
trial = tt.create_trial(sys.argv[1])
print("steps", trial.steps(), len(trial.tensor_names(collection="gradients")), "gluonnlp" in sys.modules)
""".replace("HOOK_ARGS", HOOK_ARGS)


def test_an_mxnet_outside_the_range_gets_one_warning_and_training_goes_on(tmp_path):
    r = run_with_versions(TRAIN, {"mxnet": "2.0.0"}, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [expected_warning("tensortap-mxnet", "mxnet", ">=1.9,<2", "2.0.0")]
    assert "steps [0, 1, 2] 4 False" in r.stdout  # gluonnlp not imported by the check


def test_gluonnlp_is_checked_where_the_script_imported_it(tmp_path):
    require("gluonnlp")
    r = run_with_versions(TRAIN, {"mxnet": "1.9.1", "gluonnlp": "0.9.2"}, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [expected_warning("tensortap-mxnet", "gluonnlp", ">=0.10,<0.11", "0.9.2")]
    assert "steps [0, 1, 2] 4 True" in r.stdout


def test_the_installed_mxnet_is_in_the_range_and_nothing_is_said(tmp_path):
    r = run_with_versions(TRAIN, {}, str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert version_warnings(r.stderr) == [], r.stderr
    assert "steps [0, 1, 2] 4 False" in r.stdout
