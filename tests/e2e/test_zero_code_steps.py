"""`tensortap run` on plain PyTorch loops steps at `optimizer.step()`: one TRAIN step per optimizer
step, numbered by the count of optimizer steps, whatever else the script runs through the model
(gradient accumulation, two forwards per step, evaluation forwards under torch.no_grad). Each
saved value is checked against a twin computed here, by hand, without tensortap."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import tensortap as tt
from test_zero_code import tensortap_run, write

torch = pytest.importorskip("torch")
nn = torch.nn

TRAIN, EVAL = tt.modes.TRAIN, tt.modes.EVAL
CONFIG = 'include_collections = ["weights", "gradients", "losses", "outputs"]\n[save_config]\nsave_interval = 1\n'

# gradient accumulation: K backward passes per optimizer step, the loss scaled by 1/K (the usual
# pattern), the accumulated gradient clipped before the optimizer applies it
ACCUMULATION_SCRIPT = """\
import torch
from torch import nn

STEPS, K = 4, 3
torch.manual_seed(0)
torch.set_num_threads(1)
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
g = torch.Generator().manual_seed(1)
xs, ys = torch.randn(STEPS, K, 5, 6, generator=g), torch.randint(0, 3, (STEPS, K, 5), generator=g)
for step in range(STEPS):
    for k in range(K):
        (nn.functional.cross_entropy(model(xs[step, k]), ys[step, k]) / K).backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    opt.step()
    opt.zero_grad()
print("trained")
"""


def _accumulation_by_hand():
    """What ACCUMULATION_SCRIPT's optimizer steps use and apply: per step the weights, the
    clipped accumulated gradient, the sum of the values backward() was called on, and the
    output of the step's first forward."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    steps, k_ = 4, 3
    xs, ys = torch.randn(steps, k_, 5, 6, generator=g), torch.randint(0, 3, (steps, k_, 5), generator=g)
    want = []
    for step in range(steps):
        w = model[0].weight.detach().clone()
        loss, out0 = 0.0, None
        for k in range(k_):
            out = model(xs[step, k])
            out0 = out.detach().clone() if out0 is None else out0
            part = nn.functional.cross_entropy(out, ys[step, k]) / k_
            part.backward()
            loss += float(part.detach())
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        want.append((w, model[0].weight.grad.clone(), loss, out0))
        opt.step()
        opt.zero_grad()
    return want


def _zero_code_run(tmp_path, script: str):
    """The trial of `script` run unmodified under `tensortap run` with CONFIG."""
    path = write(tmp_path, "train.py", script)
    cfg = write(tmp_path, "tensortap.toml", CONFIG)
    out = str(tmp_path / "run")
    r = tensortap_run("--config", cfg, "--out", out, "--", sys.executable, path)
    assert r.returncode == 0 and "trained" in r.stdout, r.stderr[-3000:]
    return tt.create_trial(out)


def test_gradient_accumulation_saves_the_applied_gradient_once_per_optimizer_step(tmp_path):
    trial = _zero_code_run(tmp_path, ACCUMULATION_SCRIPT)
    assert trial.steps(mode=TRAIN) == [0, 1, 2, 3] and trial.steps() == [0, 1, 2, 3]
    assert trial.tensor("gradients/0.weight").steps(mode=TRAIN) == [0, 1, 2, 3]
    assert not trial.tensor_names(regex="#")  # the later micro-batches are no extra calls of the layers
    for step, (w, grad, loss, out0) in enumerate(_accumulation_by_hand()):
        np.testing.assert_array_equal(trial.tensor("0.weight").value(step, mode=TRAIN), w.numpy())
        np.testing.assert_allclose(trial.tensor("gradients/0.weight").value(step, mode=TRAIN), grad.numpy(),
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(float(trial.tensor("loss").value(step, mode=TRAIN)), loss, rtol=1e-6)
        np.testing.assert_allclose(trial.tensor("2/output_0").value(step, mode=TRAIN), out0.numpy(), rtol=1e-6)


# two training forwards per optimizer step with a forward under torch.no_grad between them (inside
# the step: part of it), then after the optimizer step a monitoring forward under torch.no_grad with
# the model still in train mode, and every third step a validation forward in eval mode
TWO_FORWARDS_SCRIPT = """\
import torch
from torch import nn

torch.manual_seed(0)
torch.set_num_threads(1)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
opt = torch.optim.Adam(model.parameters(), lr=0.05)
g = torch.Generator().manual_seed(1)
xa, xb, xv = torch.randn(6, 8, 6, generator=g), torch.randn(6, 8, 6, generator=g), torch.randn(4, 6, generator=g)
y = torch.randint(0, 3, (6, 8), generator=g)
for step in range(6):
    opt.zero_grad()
    out = model(xa[step])
    with torch.no_grad():
        model(xv)
    loss = nn.functional.cross_entropy(out, y[step]) + 0.1 * model(xb[step]).pow(2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        model(xv)
    if step % 3 == 2:
        model.eval()
        with torch.no_grad():
            model(xv)
        model.train()
print("trained")
"""


def _two_forwards_by_hand():
    """Per optimizer step of TWO_FORWARDS_SCRIPT: the weights, the loss, the first forward's output."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(6, 8, 6, generator=g), torch.randn(6, 8, 6, generator=g)
    torch.randn(4, 6, generator=g)
    y = torch.randint(0, 3, (6, 8), generator=g)
    want = []
    for step in range(6):
        w = model[0].weight.detach().clone()
        opt.zero_grad()
        out = model(xa[step])
        loss = nn.functional.cross_entropy(out, y[step]) + 0.1 * model(xb[step]).pow(2).mean()
        want.append((w, float(loss.detach()), out.detach().clone()))
        loss.backward()
        opt.step()
    return want


def test_train_steps_are_optimizer_steps_with_two_forwards_and_no_grad_forwards(tmp_path):
    trial = _zero_code_run(tmp_path, TWO_FORWARDS_SCRIPT)
    assert trial.steps(mode=TRAIN) == list(range(6))
    # each optimizer step: TRAIN (its three forwards), then the no-grad forward after it (EVAL), after
    # steps 2 and 5 the validation (EVAL)
    modes = [trial.mode(s) for s in trial.steps()]
    want_modes = []
    for step in range(6):
        want_modes += [TRAIN, EVAL] + ([EVAL] if step % 3 == 2 else [])
    assert modes == want_modes
    assert trial.steps(mode=EVAL) == list(range(8))
    assert not trial.tensor_names(regex="#")  # the step's later forwards are part of it, not captured again
    assert trial.tensor("gradients/0.weight").steps(mode=TRAIN) == list(range(6))
    for step, (w, loss, out0) in enumerate(_two_forwards_by_hand()):
        np.testing.assert_array_equal(trial.tensor("0.weight").value(step, mode=TRAIN), w.numpy())
        np.testing.assert_allclose(float(trial.tensor("loss").value(step, mode=TRAIN)), loss, rtol=1e-6)
        np.testing.assert_allclose(trial.tensor("2/output_0").value(step, mode=TRAIN), out0.numpy(), rtol=1e-6)
