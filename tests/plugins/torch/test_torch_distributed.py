"""DDP with the gloo backend on CPU: two real processes, one worker each in the same run."""
from tests.conftest import require

require("torch")

import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

import tensortap as tt  # noqa: E402
from tests.gloo_exit import ATTEMPTS, launch_retrying_exit_abort, run_ranks  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")


def test_two_ddp_ranks_write_two_workers_with_their_own_data(tmp_path, run_url):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    outs = [f"{run_url}-{a}" for a in range(ATTEMPTS)]
    attempt, code, log = launch_retrying_exit_abort(lambda a: run_ranks(
        [[sys.executable, WORKER, str(r), "2", str(tmp_path / f"rendezvous{a}"), outs[a]] for r in range(2)],
        env, timeout=120))
    assert code == 0, log
    out = outs[attempt]
    trial = tt.create_trial(out)
    assert trial.workers() == ["worker-0", "worker-1"]
    assert trial.metadata.get("world_size") == 2
    for w in trial.workers():
        assert trial.steps(worker=w) == [0, 1, 2]
    # names are those of the wrapped module (no "module." prefix from DDP)
    assert "0.weight" in trial.tensor_names(collection="weights")
    x0 = trial.tensor("0/input_0").value(1, worker="worker-0")
    x1 = trial.tensor("0/input_0").value(1, worker="worker-1")
    assert x0.shape == x1.shape == (6, 4) and not np.array_equal(x0, x1)
    l0, l1 = (float(trial.tensor("loss").value(2, worker=w)) for w in trial.workers())
    assert l0 != l1
    # DDP keeps the replicas equal: the weights the forward used agree across ranks
    assert np.array_equal(trial.tensor("2.weight").value(2, worker="worker-0"),
                          trial.tensor("2.weight").value(2, worker="worker-1"))
    # gradients are each rank's local gradient (captured as autograd accumulates, before the all-reduce)
    g0 = trial.tensor("gradients/2.weight").value(0, worker="worker-0")
    g1 = trial.tensor("gradients/2.weight").value(0, worker="worker-1")
    assert not np.array_equal(g0, g1)
