"""`tensortap run` on Gluon loops steps at `trainer.step()`: with gradient accumulation
(grad_req="add": K forward/backward passes, then one trainer.step; or grad_req="write" and one
trainer.step after K batches) each TRAIN step's gradients are what MXNet holds when trainer.step
is called, read here through MXNet itself in a run without tensortap; the same script with an
explicit hook driving its steps gives the same run; a rule's stop lands between trainer steps."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

import tensortap as tt
from test_zero_code import assert_same_run, run, run_with_stop_rule, tensortap_run, write

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed in this venv", allow_module_level=True)

CONFIG = 'include_collections = ["weights", "gradients", "losses", "outputs"]\n[save_config]\nsave_interval = 1\n'

# K micro-batches per trainer.step; an evaluation forward (outside autograd.record) after each step.
# REFERENCE: no tensortap; what MXNet holds at each trainer.step is saved with numpy.
# TWIN_OUT: an explicit hook driving its steps as a user would write it.
ACCUMULATION_SCRIPT = """\
import os, sys
import numpy as np
import mxnet as mx
from mxnet import autograd, gluon, nd

REQ, STEPS, K = sys.argv[1], 4, 3
REFERENCE, EXPLICIT = os.environ.get("REFERENCE"), os.environ.get("TWIN_OUT")
mx.random.seed(0)
np.random.seed(0)
net = gluon.nn.HybridSequential()
net.add(gluon.nn.Dense(32, activation="tanh", in_units=12), gluon.nn.Dense(5, in_units=32))
net.initialize(mx.init.Xavier())
for p in net.collect_params().values():
    p.grad_req = REQ
loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
if EXPLICIT:
    import tensortap as tt
    hook = tt.Hook(EXPLICIT, include_collections=["weights", "gradients", "losses", "outputs"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(net)
    hook.register_loss(loss_fn)
    hook.drive_steps([tt.modes.TRAIN])
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.2, "momentum": 0.9})
xs = nd.array(np.random.standard_normal((STEPS, K, 8, 12)))
ys = nd.array(np.random.randint(0, 5, (STEPS, K, 8)))
ref = {}
for step in range(STEPS):
    if REFERENCE:
        for n, p in net.collect_params().items():
            ref[f"{step}/{n}"] = p.data().asnumpy()
    for k in range(K):
        if EXPLICIT:
            hook.begin_step(tt.modes.TRAIN, step=step)
        with autograd.record():
            out = net(xs[step, k])
            loss = loss_fn(out, ys[step, k])
        loss.backward()
        if REFERENCE and k == 0:
            ref[f"{step}/loss"] = loss.mean().asnumpy()
            ref[f"{step}/out"] = out.asnumpy()
    if REFERENCE:
        for n, p in net.collect_params().items():
            ref[f"{step}/gradients/{n}"] = p.grad().asnumpy()
    if EXPLICIT:
        hook.capture_gradients()
    trainer.step(8 * K if REQ == "add" else 8)
    if REQ == "add":
        for p in net.collect_params().values():
            p.zero_grad()
    net(xs[step, 0])  # an evaluation forward: an EVAL step
if REFERENCE:
    np.savez(REFERENCE, **ref)
if EXPLICIT:
    hook.close()
print("trained")
"""


@pytest.mark.parametrize("req", ["add", "write"])
def test_accumulated_gradients_are_what_mxnet_holds_at_trainer_step(tmp_path, req):
    script = write(tmp_path, "train.py", ACCUMULATION_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", CONFIG)
    zero, twin, refpath = str(tmp_path / "zero"), str(tmp_path / "twin"), str(tmp_path / "ref.npz")
    r = tensortap_run("--config", cfg, "--out", zero, "--", sys.executable, script, req)
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-3000:]
    ref = run([sys.executable, script, req], env={"REFERENCE": refpath})
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = np.load(refpath)
    trial = tt.create_trial(zero)
    assert trial.steps(mode="train") == [0, 1, 2, 3] and trial.steps(mode="eval") == [0, 1, 2, 3]
    names = ["dense0_weight", "dense0_bias", "dense1_weight", "dense1_bias"]
    assert all(f"0/{n}" in want.files for n in names)
    for s in range(4):
        for n in names:
            g = trial.tensor(f"gradients/{n}").value(s, mode="train")
            np.testing.assert_array_equal(g, want[f"{s}/gradients/{n}"], err_msg=f"gradients/{n} at step {s}")
            if n.endswith("weight"):  # the weights the step's first forward used
                np.testing.assert_array_equal(trial.tensor(n).value(s, mode="train"), want[f"{s}/{n}"])
        # the loss and outputs of the step's first forward, once (no loss#1, no output of later passes)
        np.testing.assert_allclose(trial.tensor("loss").value(s, mode="train"), want[f"{s}/loss"].reshape(()),
                                   rtol=1e-6)
        np.testing.assert_array_equal(trial.tensor("hybridsequential0/output_0").value(s, mode="train"),
                                      want[f"{s}/out"])
    assert not [n for n in trial.tensor_names() if "#" in n]
    if req == "add":  # the accumulated gradient is the sum over the K passes: not any one pass's
        g0 = want["0/gradients/dense1_weight"]
        assert np.abs(g0).sum() > 0
    # the same script with an explicit hook written in gives the same run
    t = run([sys.executable, script, req], env={"TWIN_OUT": twin})
    assert t.returncode == 0, t.stderr[-3000:]
    assert_same_run(zero, twin)


STOP_SCRIPT = """\
import atexit, time
import mxnet as mx
from mxnet import autograd, gluon, nd

mx.random.seed(0)
net = gluon.nn.Dense(2, in_units=4)
net.initialize()
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01})
counts = {"applied": 0, "completed": 0}
atexit.register(lambda: print("applied", counts["applied"], "completed", counts["completed"]))
for step in range(3000):
    with autograd.record():
        loss = (net(nd.random.normal(shape=(4, 4))) ** 2).mean()
    loss.backward()
    trainer.step(1)
    counts["applied"] += 1
    time.sleep(0.005)
    counts["completed"] += 1
print("finished all steps")
"""


def test_stop_training_lands_between_trainer_steps(tmp_path):
    script = write(tmp_path, "train.py", STOP_SCRIPT)
    out = str(tmp_path / "run")
    r = run_with_stop_rule(tmp_path, script, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finished all steps" not in r.stdout
    assert "tensortap: training stopped: rule vanishing_gradient fired at step 0" in r.stderr
    assert "Traceback" not in r.stderr
    # raised at the next training forward: every applied trainer.step's iteration ran to its end
    applied, completed = (int(v) for v in r.stdout.split("applied ")[1].split()[::2])
    assert applied == completed > 0
    trial = tt.create_trial(out)
    assert trial.is_complete() and trial.steps(mode="train")[0] == 0
    assert max(trial.steps(mode="train")) < applied  # steps are trainer steps: none saved past the last applied
