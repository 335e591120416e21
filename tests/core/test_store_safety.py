"""A run directory from a stranger is safe: tensor names are data (never paths), and files holding
pickles or garbage are refused or skipped with a clear message, never executed."""
from __future__ import annotations

import os
import pickle
import numpy as np
import pytest

import tensortap as tt
from tensortap.store import layout
from tt_store_helpers import train_mlp, tree

EVIL_NAMES = ["../../x", "../escape", "/etc/passwd", "/tmp/tensortap-evil", "a\x00b", "\x00", "..", ".",
              "workers/worker-0/data-000000.ttd", "C:\\Windows\\x", "~/x", "%2e%2e/x", "x/" * 50 + "y",
              "é/ü/中", "name with spaces\nand newline"]


def test_names_stay_data(tmp_path):
    run = tmp_path / "inner" / "run"
    before = tree(str(tmp_path))
    hook = tt.Hook(str(run), include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    for i, name in enumerate(EVIL_NAMES):
        hook.save_tensor(name, np.full(3, i, np.int32), collections=[name])  # as collection too
    hook.close()
    assert hook.errors == []
    after = tree(str(tmp_path))
    new = sorted(set(after) - set(before))
    w = os.path.join("inner", "run", layout.WORKERS_DIR, "worker-0")
    assert new == sorted([os.path.join("inner"), os.path.join("inner", "run"),
                          os.path.join("inner", "run", layout.RUN_MARKER),
                          os.path.join("inner", "run", layout.WORKERS_DIR), w,
                          os.path.join(w, layout.META), os.path.join(w, layout.CLAIM),
                          os.path.join(w, layout.data_file(0)),
                          os.path.join(w, layout.index_file(0))])
    assert not os.path.exists("/tmp/tensortap-evil") and not os.path.exists(str(tmp_path / "x"))
    trial = tt.create_trial(str(run))
    assert sorted(trial.tensor_names()) == sorted(EVIL_NAMES)
    for i, name in enumerate(EVIL_NAMES):
        assert list(trial.tensor(name).value(0)) == [i, i, i]
        assert trial.tensor_names(collection=name) == [name]


class _Boom:
    """Unpickling this creates a file: proof that something executed the pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("where", ["index", "data", "meta", "marker", "extra_npy", "worker_pkl"])
def test_pickles_in_a_run_are_never_executed(tmp_path, where):
    run = str(tmp_path / "run")
    train_mlp(run, steps=3, save_interval=1)
    proof = tmp_path / "EXECUTED"
    blob = pickle.dumps(_Boom(str(proof)), protocol=2)
    pickle.loads(pickle.dumps(_Boom(str(tmp_path / "selftest"))))  # the blob really would run
    assert (tmp_path / "selftest").exists()
    wdir = os.path.join(run, layout.WORKERS_DIR, "worker-0")
    target = {"index": os.path.join(wdir, layout.index_file(0)), "data": os.path.join(wdir, layout.data_file(0)),
              "meta": os.path.join(wdir, layout.META), "marker": os.path.join(run, layout.RUN_MARKER),
              "extra_npy": os.path.join(wdir, "data-000001.npy"),
              "worker_pkl": os.path.join(run, layout.WORKERS_DIR, "worker-1", "index-000000.tti")}[where]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as f:
        f.write(blob)
    try:
        trial = tt.create_trial(run)
    except (tt.NotARunError, tt.CorruptRunError) as e:
        assert str(e)
    else:
        for name in trial.tensor_names():
            for s in trial.tensor(name).steps():
                try:
                    trial.tensor(name).value(s)
                except tt.CorruptRunError as e:
                    assert "damaged" in str(e)
        if where == "index":
            assert trial.steps() == []
            assert any("not a valid record" in p for p in trial.problems), trial.problems
        if where == "data":
            with pytest.raises(tt.CorruptRunError, match="damaged"):
                trial.tensor("fc1.weight").value(0)
        if where == "meta":
            assert any("meta.json is unreadable" in p for p in trial.problems)
        if where in ("extra_npy", "marker"):
            assert trial.steps() == [0, 1, 2]
    from tensortap.cli import main

    assert main(["ls", run]) in (0, 2)  # a clear message or a summary, never a traceback
    assert not proof.exists(), "a pickle in the run was executed"


def test_garbage_index_segment_is_reported_and_skipped(run_dir):
    train_mlp(run_dir, steps=4, save_interval=1)
    wdir = os.path.join(run_dir, layout.WORKERS_DIR, "worker-0")
    # a second, garbage segment after the good one, and a closed run: the first stays fully readable
    with open(os.path.join(wdir, layout.index_file(0)), "rb") as f:
        good = f.read()
    with open(os.path.join(wdir, layout.index_file(0)), "wb") as f:
        f.write(good + os.urandom(100))
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0, 1, 2, 3]
    assert any("100 byte(s)" in p and "not a valid record" in p for p in trial.problems), trial.problems
    assert trial.tensor("fc1.weight").value(3).shape == (16, 8)
