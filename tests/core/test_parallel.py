"""Rules over a run on a Dask LocalCluster give exactly the serial results."""
from __future__ import annotations

import numpy as np
import pytest

import tensortap as tt

distributed = pytest.importorskip("dask.distributed", reason="dask.distributed not installed")


def _make_run(path: str, steps: int = 40) -> None:
    from tensortap.testing import NumpyMLP, make_data

    model = NumpyMLP(seed=0)
    x, y = make_data(256)
    hook = tt.Hook(path, include_collections=["weights", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=2))
    hook.register(model)
    hook.register_loss(model)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        i = rng.integers(0, len(x), 32)
        model.train_step(x[i], y[i], lr=0.3)
    hook.close()


def _factory():
    class GradNormBelow(tt.rules.Rule):
        """Fires when the fc1 weight gradient's L2 norm is below a threshold."""

        name = "grad_norm_below"

        def __init__(self, threshold: float = 0.3) -> None:
            super().__init__()
            self.threshold = threshold

        def invoke_at_step(self, trial, step):
            g = trial.tensor("gradients/fc1.weight").value(step)
            n = float(np.linalg.norm(g))
            return n < self.threshold, f"|g|={n:.4f}", {"norm": n}

    return GradNormBelow()


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_parallel_rule_equals_serial(tmp_path, client):
    run = str(tmp_path / "run")
    _make_run(run)
    serial = tt.invoke_rule(_factory(), tt.create_trial(run))
    par = tt.parallel.invoke_rule_parallel(_factory, run, client=client, n_chunks=5)
    assert [r.step for r in par] == [r.step for r in serial] == list(range(0, 40, 2))
    assert [r.fired for r in par] == [r.fired for r in serial]
    assert [r.values["norm"] for r in par] == [r.values["norm"] for r in serial]
    assert any(r.fired for r in par) and not all(r.fired for r in par)  # the threshold splits the run


def test_map_steps(tmp_path, client):
    run = str(tmp_path / "run")
    _make_run(run, steps=10)
    got = tt.parallel.map_steps(lambda t, s: float(t.tensor("loss").value(s)), run, client=client)
    trial = tt.create_trial(run)
    assert got == {s: float(trial.tensor("loss").value(s)) for s in trial.steps()}


def test_bad_rule_fails_before_submitting(tmp_path, client):
    run = str(tmp_path / "run")
    _make_run(run, steps=4)
    with pytest.raises(tt.ConfigError, match="unknown rule"):
        tt.parallel.invoke_rule_parallel("no_such_rule", run, client=client)
