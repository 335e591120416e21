"""Issue 16 §5: a record can never be read as another's. Each data record's checksum is bound to
the (writer, worker, segment, step, name, offset) it was written for, so a misplaced record is a
CorruptRunError, never a value; missing, emptied or misplaced segments and a dead writer's torn
tail are listed in `trial.problems`; a missing file is a CorruptRunError naming it."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import tensortap as tt
from tensortap.store import StepBatch, StoreWriter, TensorItem, layout

STEPS = 12


def _write(root: str, seed: int, steps: int = STEPS) -> dict:
    """A run of equal-sized steps, 3 to a segment (so segments line up byte for byte with each
    other and with a twin run's); returns every value written."""
    rng = np.random.default_rng(seed)
    # a step: one pack record (21 bytes of framing) of both arrays, 3 zero bytes aligning them for float32
    w = StoreWriter(root, 0, segment_bytes=3 * (21 + 3 + 2 * 64 * 4) - 1)
    truth = {}
    for s in range(steps):
        arrays = {"a": rng.standard_normal(64).astype(np.float32), "b": rng.standard_normal(64).astype(np.float32)}
        w.submit(StepBatch(s, "train", s, [TensorItem(n, "value", ("c",), a) for n, a in arrays.items()]))
        truth.update({(n, s): a for n, a in arrays.items()})
    w.close()
    return truth


def _wdir(root: str) -> str:
    return os.path.join(root, layout.WORKERS_DIR, "worker-0")


def _seg_steps(trial, seg: int):
    r = trial._workers["worker-0"]
    return sorted(s for s, si in r.steps.items() if si.seg == seg)


@pytest.fixture
def run(tmp_path):
    root = str(tmp_path / "run")
    truth = _write(root, seed=1)
    files = sorted(os.listdir(_wdir(root)))
    assert layout.data_file(3) in files  # 4 segments of 3 steps
    return root, truth


def _read_all(root: str, truth: dict):
    """Every value the trial offers: (intact, refused); a misread fails the test."""
    trial = tt.create_trial(root)
    ok, refused = 0, []
    for (name, s), want in truth.items():
        try:
            got = trial.tensor(name).value(s)
        except tt.CorruptRunError as e:
            refused.append((name, s, str(e)))
            continue
        except tt.StepNotFound:
            continue
        assert got.tobytes() == want.tobytes(), f"misread {name}@{s}"
        ok += 1
    return trial, ok, refused


def test_a_data_segment_copied_over_another_is_refused_never_misread(run):
    """Before: the copy returned step 3-5's values as steps 6-8 with no error."""
    root, truth = run
    wdir = _wdir(root)
    shutil.copyfile(os.path.join(wdir, layout.data_file(1)), os.path.join(wdir, layout.data_file(2)))
    trial, ok, refused = _read_all(root, truth)
    assert {s for _, s, _ in refused} == {6, 7, 8} and ok == len(truth) - 6
    assert all("misplaced" in m and "data-000002.ttd" in m for *_, m in refused), refused


def test_a_segment_from_another_run_of_the_same_shape_is_refused(run, tmp_path):
    """A botched restore: the same script's other run, same sizes at the same offsets."""
    root, truth = run
    twin = str(tmp_path / "twin")
    _write(twin, seed=2)
    shutil.copyfile(os.path.join(_wdir(twin), layout.data_file(1)), os.path.join(_wdir(root), layout.data_file(1)))
    trial, ok, refused = _read_all(root, truth)
    assert {s for _, s, _ in refused} == {3, 4, 5} and ok == len(truth) - 6
    # and a whole segment pair (index and data) of the twin is refused as another writer's
    for f in (layout.data_file(2), layout.index_file(2)):
        shutil.copyfile(os.path.join(_wdir(twin), f), os.path.join(_wdir(root), f))
    trial, ok, refused = _read_all(root, truth)
    assert any("index-000002.tti" in p and "another writer" in p for p in trial.problems), trial.problems
    assert trial.steps() == [0, 1, 2, 3, 4, 5, 9, 10, 11]  # its steps are not taken for this run's


def test_an_index_segment_copied_over_another_is_listed_and_the_real_steps_stay(run):
    root, truth = run
    wdir = _wdir(root)
    for f in (layout.data_file, layout.index_file):
        shutil.copyfile(os.path.join(wdir, f(1)), os.path.join(wdir, f(2)))
    trial, ok, refused = _read_all(root, truth)
    assert any("index-000002.tti" in p and "holds the index of segment 1" in p for p in trial.problems)
    assert trial.steps() == [0, 1, 2, 3, 4, 5, 9, 10, 11] and not refused and ok == 18


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_middle_index_segment_is_listed(run, how):
    """Before: its steps vanished with problems == []."""
    root, truth = run
    path = os.path.join(_wdir(root), layout.index_file(1))
    if how == "deleted":
        os.remove(path)
    else:
        open(path, "wb").close()
    trial, ok, refused = _read_all(root, truth)
    assert trial.steps() == [0, 1, 2, 6, 7, 8, 9, 10, 11] and ok == 18 and not refused
    want = "is missing" if how == "deleted" else "is empty"
    assert any("index-000001.tti" in p and want in p and "lost" in p for p in trial.problems), trial.problems


def test_a_missing_data_file_is_a_corrupt_run_error_naming_it(run):
    """Before: a raw FileNotFoundError."""
    root, truth = run
    os.remove(os.path.join(_wdir(root), layout.data_file(2)))
    trial = tt.create_trial(root)
    with pytest.raises(tt.CorruptRunError, match=r"worker-0/data-000002.ttd is missing"):
        trial.tensor("a").value(7)
    got = trial.values_at(["a", "b"], 7)  # the batch read leaves it out, value() says why
    assert got == {}
    assert any("data-000002.ttd is missing" in p for p in trial.problems), trial.problems
    assert trial.tensor("a").value(3).tobytes() == truth[("a", 3)].tobytes()


WRITER = """
import sys, time
import numpy as np
import tensortap as tt
hook = tt.Hook(sys.argv[1], include_collections=["scalars"])
for s in range(10 ** 6):
    hook.begin_step()
    hook.save_tensor("x", np.full(1000, s, np.float32), collections=["extra"])
    hook.save_scalar("s", float(s))
    if s == 20:
        hook.flush()
        print("20", flush=True)
"""


def test_the_torn_tail_of_a_crashed_run_is_listed(tmp_path):
    """Before: the last segment's tail was never reported for a run that is not closed."""
    root = str(tmp_path / "run")
    p = subprocess.Popen([sys.executable, "-c", WRITER, root], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "20"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    wdir = _wdir(root)
    last = max(n for n in os.listdir(wdir) if n.endswith(".tti"))
    with open(os.path.join(wdir, last), "ab") as f:  # make sure a torn record is there, whatever the kill hit
        f.write(b"TTR1\x02" + b"\x00" * 7)
    trial = tt.create_trial(root)
    assert len(trial.steps()) >= 21
    problems = trial.problems
    assert any("stopped without closing the run" in p and "torn tail" in p and last in p for p in problems), problems
    assert any(f"pid {p.pid} on this machine is gone" in q for q in problems), problems
    last_step = trial.steps()[-1]
    assert float(trial.tensor("s").value(last_step)) == last_step


def test_a_missing_meta_json_is_listed_and_the_values_still_read(run):
    root, truth = run
    os.remove(os.path.join(_wdir(root), layout.META))
    trial, ok, refused = _read_all(root, truth)
    assert ok == len(truth) and not refused
    assert any("meta.json is missing" in p for p in trial.problems), trial.problems
