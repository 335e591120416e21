"""export-tensorboard into a folder it exported to before replaces its own files (no doubled
series, other files kept), and --follow exports a live run as it grows, each step once."""
from __future__ import annotations

import os
import sys
import threading
import time
import types

import numpy as np
import pytest

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.export import export_tensorboard
from tests.core.test_vis_runs import mlp_run
from tests.core.tt_serve_helpers import Writer

if "tensorflow" not in sys.modules:  # TensorBoard's own reader, without importing tensorflow
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                         reason="needs the tensorboard package to read event files back")


def scalars(logdir: str, tag: str):
    if not os.path.isdir(logdir):  # not exported yet (newer TensorBoard raises on a missing directory)
        return []
    a = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0})
    a.Reload()
    return [(e.step, e.value) for e in a.Scalars(tag)] if tag in a.Tags()["scalars"] else []


def test_exporting_again_replaces_instead_of_doubling(tmp_path):
    run = mlp_run(str(tmp_path / "run"), steps=10, eval_every=5)
    tb = str(tmp_path / "tb")
    os.makedirs(os.path.join(tb, "train"))
    mine = os.path.join(tb, "train", "events.out.tfevents.1.host.1.other-tool")  # not ours: kept
    with open(mine, "wb"):
        pass
    notes = os.path.join(tb, "notes.txt")
    with open(notes, "w") as f:
        f.write("keep me")
    trial = tt.create_trial(run)
    want = [(s, float(np.float32(trial.tensor("loss").value(s)))) for s in trial.tensor("loss").steps()
            if trial.mode(s).value == "train"]
    for _ in range(3):
        export_tensorboard(run, tb)
        time.sleep(1.05)  # a new file name each time (the name carries the second)
        assert scalars(os.path.join(tb, "train"), "loss") == want
    assert os.path.exists(mine) and open(notes).read() == "keep me"
    own = [f for f in os.listdir(os.path.join(tb, "train")) if f.endswith(".tensortap")]
    assert len(own) == 1


def test_follow_exports_a_live_run_as_it_grows(tmp_path):
    w = Writer(str(tmp_path / "live"))
    tb = str(tmp_path / "tb")
    result = {}
    try:
        w.advance(4)
        th = threading.Thread(target=lambda: result.update(counts=export_tensorboard(
            w.run_dir, tb, follow=True, poll=0.1, timeout=120)), daemon=True)
        th.start()
        deadline = time.monotonic() + 30
        while len(scalars(os.path.join(tb, "train"), "accuracy")) < 4:
            assert time.monotonic() < deadline, "the first steps were not exported"
            time.sleep(0.1)
        w.advance(9)
        deadline = time.monotonic() + 30
        while len(scalars(os.path.join(tb, "train"), "accuracy")) < 9:
            assert time.monotonic() < deadline, "new steps were not appended"
            time.sleep(0.1)
        assert th.is_alive(), "the export stopped while the run was still being written"
        w.stop()  # closes the run: the export finishes
        th.join(30)
        assert not th.is_alive()
    finally:
        w.kill()
    trial = tt.create_trial(w.run_dir)
    got = scalars(os.path.join(tb, "train"), "accuracy")
    want = [(s, float(np.float32(trial.tensor("accuracy").value(s)))) for s in trial.tensor("accuracy").steps()]
    assert got == want and len(got) == len(trial.steps())
    assert result["counts"]["train"]["events"] == len(trial.steps())


def test_cli_follow_says_what_it_appends(tmp_path, capsys):
    run = mlp_run(str(tmp_path / "run"), steps=4, eval_every=2)
    assert cli(["export-tensorboard", run, "--out", str(tmp_path / "tb"), "--follow", "--poll", "0.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"following {run}:") and "view with: tensorboard --logdir" in out
