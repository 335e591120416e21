"""The writer when the disk cannot keep up or is full: back-pressure ("block" loses nothing and
bounds memory, "drop" drops with a count), disk full (training goes on, one report, writing
resumes, the run stays readable) through an fsspec file system that injects the faults, and on a
real size-limited tmpfs where this machine allows mounting one."""
from __future__ import annotations

import logging
import os
import subprocess

import numpy as np
import pytest

import tensortap as tt
from tt_store_helpers import FaultyFS, rss_bytes

MB = 2 ** 20


@pytest.fixture(autouse=True)
def _reset_faults():
    FaultyFS.reset()
    yield
    FaultyFS.reset()


def _step_array(s: int, n: int) -> np.ndarray:
    return np.full(n, s, np.float32)


def test_block_policy_loses_nothing_and_bounds_memory(tmp_path):
    FaultyFS.delay_per_write = 0.004  # a slow disk: ~4 ms per write call
    n_steps, per_step = 40, MB  # 40 MB produced much faster than the disk takes it
    queue = 3 * MB
    hook = tt.Hook(f"faulty://{tmp_path}/run", include_collections=["scalars"],
                   save_config=tt.SaveConfig(save_interval=1), queue_bytes=queue, on_full="block")
    peak_pending, rss0, rss_peak = 0, rss_bytes(), 0
    for s in range(n_steps):
        hook.begin_step()
        hook.save_tensor("x", _step_array(s, per_step // 4), collections=["big"])
        peak_pending = max(peak_pending, hook.writer._pending if hook.writer else 0)
        rss_peak = max(rss_peak, rss_bytes() or 0)
    hook.close()
    st = hook.stats
    assert st.steps_written == n_steps and st.steps_dropped == 0
    assert st.blocked_seconds > 0, "the training thread never waited: the disk was not slow enough"
    assert peak_pending <= queue + per_step
    if rss0:
        assert rss_peak - rss0 < 20 * MB, f"memory grew by {(rss_peak - rss0) / MB:.0f} MB"
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps() == list(range(n_steps))
    for s in (0, 17, n_steps - 1):
        assert np.array_equal(trial.tensor("x").value(s), _step_array(s, per_step // 4))


def test_drop_policy_drops_with_a_count(tmp_path):
    FaultyFS.delay_per_write = 0.01
    n_steps = 30
    hook = tt.Hook(f"faulty://{tmp_path}/run", include_collections=["scalars"],
                   save_config=tt.SaveConfig(save_interval=1), queue_bytes=MB, on_full="drop")
    for s in range(n_steps):
        hook.begin_step()
        hook.save_tensor("x", _step_array(s, MB // 8), collections=["big"])  # 512 KB a step
    hook.close()
    st = hook.stats
    assert st.steps_dropped > 0 and st.blocked_seconds == 0
    trial = tt.create_trial(str(tmp_path / "run"))
    saved = trial.steps()
    assert len(saved) + st.steps_dropped == n_steps and st.steps_written == len(saved)
    dropped_events = [e for e in trial.events() if e.get("event") == "steps_dropped"]
    assert sum(e["count"] for e in dropped_events) == st.steps_dropped
    for s in saved:  # what was kept is intact
        assert np.array_equal(trial.tensor("x").value(s), _step_array(s, MB // 8))


def test_disk_full_training_continues_reports_once_and_resumes(tmp_path, caplog):
    """Writes raise ENOSPC for steps 10..19; the training loop never sees an exception."""
    snaps = {}

    from tensortap.testing import NumpyMLP, make_data

    model = NumpyMLP()
    hook = tt.Hook(f"faulty://{tmp_path}/run", include_collections=["weights", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    begin = hook.session.begin_step  # where the adapter begins each step (tt.Capture)

    def begin_step(mode=None, **kw):  # flip the fault switch at exact steps, after each step is on disk
        begin(mode, **kw)
        hook.flush()
        if hook.step == 10:
            FaultyFS.full.set()
        if hook.step == 20:
            FaultyFS.full.clear()

    hook.session.begin_step = begin_step
    hook.register(model)
    x, y = make_data(240)
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        for s in range(30):
            snaps[s] = model.params["fc1.weight"].copy()
            model.loss(model.forward(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8])
            model.backward()
            model.sgd_step(0.1)
        hook.close()
    assert FaultyFS.enospc_raised > 0
    warnings = [r.getMessage() for r in caplog.records if "could not save step" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
    assert any("writing resumed at step 20 after 10 step(s)" in r.getMessage() for r in caplog.records)
    assert hook.stats.steps_dropped == 10 and hook.stats.steps_written == 20
    trial = tt.create_trial(str(tmp_path / "run"))
    assert trial.steps() == list(range(10)) + list(range(20, 30))
    assert trial.is_complete()
    for s in trial.steps():
        assert np.array_equal(trial.tensor("fc1.weight").value(s), snaps[s])
    resumed = [e for e in trial.events() if e.get("event") == "write_resumed"]
    assert len(resumed) == 1 and resumed[0]["lost_steps"] == 10
    # failed segments with nothing in them were removed, not left behind one pair per lost step
    wdir = tmp_path / "run" / "workers" / "worker-0"
    assert len([f for f in os.listdir(wdir) if f.endswith(".tti")]) <= 3


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_disk_full_on_a_small_tmpfs(small_tmpfs, caplog):
    ballast = small_tmpfs / "ballast"
    run = str(small_tmpfs / "run")
    values = {}
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        hook = tt.Hook(run, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
        for s in range(40):
            if s == 5:  # fill the disk
                with open(ballast, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                    except OSError:
                        pass
            if s == 25:  # space is back
                os.remove(ballast)
            hook.begin_step()
            values[s] = np.random.default_rng(s).standard_normal(16384).astype(np.float32)  # 64 KB
            hook.save_tensor("x", values[s], collections=["data"])
            hook.flush()
        hook.close()
    assert 0 < hook.stats.steps_dropped < 40
    warnings = [r.getMessage() for r in caplog.records if "could not save step" in r.getMessage()]
    assert len(warnings) == 1, warnings
    trial = tt.create_trial(run)
    saved = trial.steps()
    assert set(range(5)) <= set(saved) and set(range(25, 40)) <= set(saved)
    for s in saved:
        assert np.array_equal(trial.tensor("x").value(s), values[s])
    assert any(e.get("event") == "write_resumed" for e in trial.events())
