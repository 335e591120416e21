"""Checks shared by the trainer-integration tests (HF Trainer, Lightning)."""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Dict, List, Sequence

import numpy as np
import pytest

import tensortap as tt
from tensortap.rules import Rule

TRAIN = tt.modes.TRAIN


def assert_steps(trial, modes: str) -> None:
    """The run's global steps are 0, 1, ... (unique, increasing) in this order of modes ("train eval
    ..."), and each mode's own steps count 0, 1, ... in turn."""
    order = modes.split()
    assert trial.steps() == list(range(len(order)))
    assert [str(trial.mode(s)) for s in trial.steps()] == order
    for m in set(order):
        assert trial.steps(mode=m) == list(range(order.count(m)))


def assert_applied_gradients(trial, after: List[Dict[str, object]], steps: Sequence[int], max_norm: float) -> None:
    """The gradient saved at TRAIN step g is what plain SGD with lr 1 applied: w_g - w_{g+1}, from the
    test's own weight snapshots `after` (before training, then after each optimizer step); its global
    norm is the clipping bound; the weights saved at g are w_g."""
    for g in steps:
        norm2 = 0.0
        for name in after[0]:
            w = after[g][name].numpy()
            applied = w - after[g + 1][name].numpy()
            saved = trial.tensor(f"gradients/{name}").value(g, mode=TRAIN)
            ulp = np.spacing(np.abs(w).max())              # what w_g - w_{g+1} can resolve in float32
            np.testing.assert_allclose(saved, applied, rtol=1e-3, atol=2 * ulp + 1e-3 * np.abs(applied).max())
            norm2 += float((saved.astype(np.float64) ** 2).sum())
            np.testing.assert_array_equal(trial.tensor(name).value(g, mode=TRAIN), w)
        assert np.sqrt(norm2) == pytest.approx(max_norm, rel=1e-3)   # clipped: what the optimizer applied


class StopsAtTrainStep2(Rule):
    """Fires from TRAIN step 2 on (with action="stop_training": a stop the trainer must honour)."""

    name = "stops_at_train_step_2"

    def invoke_at_step(self, trial, step):
        return trial.mode(step) == TRAIN and trial.mode_step(step) >= 2


def run_bounded(cmd: Sequence[str], env: dict, timeout: float, cwd: str = None):
    """Run `cmd` in its own process group; on timeout the whole group (launcher and ranks) is killed."""
    env = dict(env, OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=cwd)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout}s:\n{out[-6000:]}")
    return proc.returncode, out
