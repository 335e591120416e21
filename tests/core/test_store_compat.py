"""Runs written in older store formats still read, bit-exact: format 2 (tensortap before issue 16:
no segment headers, unbound checksums, no writer claim) and format 3 (one data record per array,
before small arrays were packed). Each fixture was written by that format's code itself (commits
8c0d35a and 008670a; tests/core/data/make_fixture_run.py says how) and the values beside it by numpy."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import tensortap as tt
from tensortap.store import layout

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture
def format2_run(tmp_path):
    run = str(tmp_path / "format2_run")
    shutil.copytree(os.path.join(DATA, "format2_run"), run)  # a copy: reading must not need to write
    return run


@pytest.mark.parametrize("fmt", [2, 3])
def test_an_old_format_run_reads_bit_exact(tmp_path, fmt):
    run = str(tmp_path / f"format{fmt}_run")
    shutil.copytree(os.path.join(DATA, f"format{fmt}_run"), run)  # a copy: reading must not need to write
    meta = os.path.join(run, layout.WORKERS_DIR, "worker-0", layout.META)
    assert f'"format_version": {fmt},' in open(meta).read()
    expected = np.load(os.path.join(DATA, f"format{fmt}_expected.npz"), allow_pickle=False)
    trial = tt.create_trial(run)
    assert trial.steps() == [0, 1, 2, 3] and trial.is_complete()
    assert trial.steps(mode=tt.modes.EVAL) == [0] and trial.mode(3) == tt.modes.EVAL
    assert trial.problems == []
    values = [k for k in expected.files if k.count("@") == 1]
    assert len(values) == 4 * 8 + 2 + 4  # 8 arrays a step, "big" on 2 steps, "acc" on 4
    for key in values:
        name, step = key.rsplit("@", 1)
        got, want = trial.tensor(name).value(int(step)), expected[key]
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert got.tobytes() == want.tobytes(), key
    for step in range(4):
        reds = trial.tensor("red/x").reduction_values(step)
        for r in ("min", "max", "mean", "l2"):
            assert np.float64(reds[r]).tobytes() == expected[f"red/x@{step}@{r}"].tobytes(), (step, r)
        counts, edges = reds["histogram"]
        assert counts.tobytes() == expected[f"red/x@{step}@histogram_counts"].tobytes()
        assert edges.tobytes() == expected[f"red/x@{step}@histogram_edges"].tobytes()
    st = trial.writer_status()
    assert st.state == "complete" and st.last_step == 3 and st.workers[0].complete


def test_format2_run_has_no_claim_and_a_new_writer_still_refuses_it(format2_run):
    wdir = os.path.join(format2_run, layout.WORKERS_DIR, "worker-0")
    assert not os.path.exists(os.path.join(wdir, layout.CLAIM))
    before = {n: open(os.path.join(wdir, n), "rb").read() for n in os.listdir(wdir)}
    with pytest.raises(tt.ConfigError, match="already holds a run for worker-0"):
        tt.Hook(format2_run)
    after = {n: open(os.path.join(wdir, n), "rb").read() for n in os.listdir(wdir) if n != layout.CLAIM}
    assert after == before  # nothing truncated or rewritten
