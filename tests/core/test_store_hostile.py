"""Issue 16 §6: a hostile run directory is refused at once. Only regular files inside the run are
opened (a FIFO or a device is never read, a symlink leading out of the run is refused), JSON is
capped in size and depth, a file where a folder should be is a clean error: each case raises
CorruptRunError or NotARunError (or is listed in `trial.problems`) within a second.

Before: a FIFO in place of an index file or meta.json hung `create_trial` forever, a symlink to
/dev/zero was read until memory ran out, deep JSON raised RecursionError, a file in place of a
folder raised NotADirectoryError."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

import numpy as np
import pytest

import tensortap as tt
from tensortap.store import framing, layout
from tt_store_helpers import train_mlp

LIMIT = 1.0  # seconds a refusal may take
REFUSED = (tt.CorruptRunError, tt.NotARunError)


@contextlib.contextmanager
def within(seconds: float):
    """Fail (instead of hanging the suite) if the block runs longer than 10x `seconds`; yields a
    list that receives the time it took."""
    def alarm(*_):
        raise TimeoutError(f"still running after {10 * seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 10 * seconds)
    took = []
    t0 = time.perf_counter()
    try:
        yield took
    finally:
        took.append(time.perf_counter() - t0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hostile") / "run")
    train_mlp(root, steps=3, save_interval=1)
    return root


@pytest.fixture
def run(pristine, tmp_path):
    root = str(tmp_path / "run")
    shutil.copytree(pristine, root, symlinks=True)
    return root


def _w(run: str, *names: str) -> str:
    return os.path.join(run, layout.WORKERS_DIR, "worker-0", *names)


def _replace(path: str, make) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
    make(path)


def _open_everything(run: str):
    """What a user does with a run: open it, list what is wrong, read a value, ask about the writer."""
    trial = tt.create_trial(run)
    _ = trial.problems
    trial.tensor("fc1.weight").value(0)
    trial.writer_status()
    return trial


def _outside(tmp_path, name: str, data: bytes = b"x") -> str:
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


CASES = {
    # where, how: each makes `where` hostile
    "fifo-meta": (lambda r: _w(r, layout.META), os.mkfifo),
    "fifo-index": (lambda r: _w(r, layout.index_file(0)), os.mkfifo),
    "fifo-data": (lambda r: _w(r, layout.data_file(0)), os.mkfifo),
    "fifo-marker": (lambda r: os.path.join(r, layout.RUN_MARKER), os.mkfifo),
    "devzero-meta": (lambda r: _w(r, layout.META), lambda p: os.symlink("/dev/zero", p)),
    "devzero-index": (lambda r: _w(r, layout.index_file(0)), lambda p: os.symlink("/dev/zero", p)),
    "devzero-data": (lambda r: _w(r, layout.data_file(0)), lambda p: os.symlink("/dev/zero", p)),
    "devzero-marker": (lambda r: os.path.join(r, layout.RUN_MARKER), lambda p: os.symlink("/dev/zero", p)),
    "index-is-a-folder": (lambda r: _w(r, layout.index_file(0)), os.mkdir),
    "workers-is-a-file": (lambda r: os.path.join(r, layout.WORKERS_DIR), lambda p: open(p, "wb").close()),
    "worker-is-a-file": (lambda r: _w(r), lambda p: open(p, "wb").close()),
    "huge-meta": (lambda r: _w(r, layout.META), lambda p: open(p, "wb").write(b" " * (8 << 20) + b"{}")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_is_refused_within_a_second(run, case):
    where, make = CASES[case]
    _replace(where(run), make)
    with within(LIMIT) as took:
        with pytest.raises(REFUSED) as err:
            _open_everything(run)
    assert took[0] < LIMIT, f"{case}: took {took[0]:.2f} s"
    assert os.path.basename(where(run)) in str(err.value), str(err.value)


@pytest.mark.parametrize("what", ["index", "data", "meta", "worker"])
def test_symlinks_leading_out_of_the_run_are_refused(run, tmp_path, what):
    """Even to a file that would read fine: a run holds only its own files."""
    if what == "worker":
        target = str(tmp_path / "elsewhere")
        shutil.copytree(_w(run), target)
        _replace(_w(run), lambda p: os.symlink(target, p))
    else:
        name = {"index": layout.index_file(0), "data": layout.data_file(0), "meta": layout.META}[what]
        target = _outside(tmp_path, "elsewhere-" + name, open(_w(run, name), "rb").read())
        _replace(_w(run, name), lambda p: os.symlink(target, p))
    with within(LIMIT) as took:
        with pytest.raises(tt.CorruptRunError, match="leads out of the run"):
            _open_everything(run)
    assert took[0] < LIMIT


def test_a_symlink_inside_the_run_is_followed(run):
    """A link that stays inside the run is not hostile (e.g. a run directory reached through a link)."""
    link = run + "-link"
    os.symlink(run, link)
    assert tt.create_trial(link).tensor("fc1.weight").value(0).shape == (16, 8)


DEEP = b"[" * 200_000 + b"]" * 200_000


@pytest.mark.parametrize("where", ["meta", "marker", "claim"])
def test_deeply_nested_json_is_refused_without_recursion_error(run, where):
    path = {"meta": _w(run, layout.META), "marker": os.path.join(run, layout.RUN_MARKER),
            "claim": _w(run, layout.CLAIM)}[where]
    with open(path, "wb") as f:
        f.write(b'{"a": ' + b"[" * 50 + b"]" * 50 + b"}" if where == "claim" else DEEP[:400_000])
    with within(LIMIT) as took:
        trial = tt.create_trial(run)  # damaged JSON in these files is listed or ignored, not fatal
        trial.writer_status()
        if where == "meta":
            assert any("meta.json is unreadable" in p and "nested" in p for p in trial.problems), trial.problems
        assert trial.tensor("fc1.weight").value(2).shape == (16, 8)
    assert took[0] < LIMIT


def test_deeply_nested_json_in_a_checksum_valid_index_record_is_skipped(run):
    deep = framing.encode(framing.KIND_INDEX, len(DEEP).to_bytes(4, "little") + DEEP)  # a valid frame
    with open(_w(run, layout.index_file(0)), "ab") as f:
        f.write(deep)
    with within(LIMIT) as took:
        trial = tt.create_trial(run)
        assert any("bad index record" in p and "nested too deeply" in p for p in trial.problems), trial.problems
        assert trial.steps() == [0, 1, 2]
    assert took[0] < LIMIT


def test_a_huge_garbage_index_file_is_not_read_whole(run):
    path = _w(run, layout.index_file(1))
    with open(path, "wb") as f:
        f.truncate(4 << 30)  # 4 GiB (sparse): a reader reading it whole would take seconds and the memory
    with within(LIMIT) as took:
        trial = tt.create_trial(run)
        assert trial.steps() == [0, 1, 2]
        assert any("index-000001.tti" in p for p in trial.problems), trial.problems
    assert took[0] < LIMIT
    assert np.isfinite(trial.tensor("fc1.weight").value(1)).all()
