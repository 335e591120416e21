"""Scale: a torch DDP run with 4 processes (gloo, CPU) writing one run; the trial merges the
workers, and rules run per worker and across workers."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import tensortap as tt
from tests.gloo_exit import ATTEMPTS, launch_retrying_exit_abort, run_ranks

pytest.importorskip("torch", reason="torch is not installed in this venv")
WORKER = os.path.join(os.path.dirname(__file__), "..", "plugins", "torch", "ddp_worker.py")
WORLD = 4


class LossAbove(tt.rules.Rule):
    """Per worker: fires when that worker's loss is above a threshold."""

    name = "loss_above_on_worker"

    def __init__(self, worker: str, threshold: float) -> None:
        super().__init__()
        self.worker, self.threshold = worker, threshold

    def invoke_at_step(self, trial, step):
        loss = float(trial.tensor("loss").value(step, worker=self.worker))
        return loss > self.threshold, f"{self.worker}: loss {loss:.4f}"


class ReplicasInSync(tt.rules.Rule):
    """Across workers: fires when the weights a forward used differ between DDP ranks."""

    name = "replicas_in_sync"

    def invoke_at_step(self, trial, step):
        t = trial.tensor("2.weight")
        ws = [t.value(step, worker=w) for w in trial.workers()]
        differ = [w for w, v in zip(trial.workers(), ws) if not np.array_equal(v, ws[0])]
        return bool(differ), f"differ from worker-0: {differ}"


def test_four_ddp_ranks_one_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    outs = [str(tmp_path / f"run{a}") for a in range(ATTEMPTS)]
    attempt, code, log = launch_retrying_exit_abort(lambda a: run_ranks(
        [[sys.executable, WORKER, str(r), str(WORLD), str(tmp_path / f"rendezvous{a}"), outs[a]] for r in range(WORLD)],
        env, timeout=300))
    assert code == 0, log
    out = outs[attempt]
    trial = tt.create_trial(out)
    assert trial.workers() == [f"worker-{r}" for r in range(WORLD)]
    assert trial.is_complete()
    losses = {w: [float(trial.tensor("loss").value(s, worker=w)) for s in (0, 1, 2)] for w in trial.workers()}
    assert len({tuple(v) for v in losses.values()}) == WORLD  # each rank saw its own data
    # across workers: DDP keeps replicas identical, the rule stays quiet on every step
    assert not any(r.fired for r in tt.invoke_rule(ReplicasInSync(), trial))
    # per worker: a threshold between the ranks' step-2 losses fires for some workers only
    step2 = sorted(v[2] for v in losses.values())
    thr = (step2[1] + step2[2]) / 2
    fired = {w for w in trial.workers() if tt.invoke_rule(LossAbove(w, thr), trial, start_step=2)[0].fired}
    assert fired == {w for w, v in losses.items() if v[2] > thr} and 0 < len(fired) < WORLD
