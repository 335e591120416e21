"""Property tests over damaged runs: random truncation points and flipped bytes in data and index
files. A value the reader returns equals what was written, or the read raises CorruptRunError
(or StepNotFound/TensorNotFound for what it could not see); nothing else escapes, nothing hangs,
and forged lengths never make it allocate more than the files hold."""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensortap as tt
from tensortap.store import StepBatch, StoreWriter, TensorItem, framing, index, layout

ALLOWED = (tt.CorruptRunError, tt.StepNotFound, tt.TensorNotFound)


def _arrays(step: int):
    rng = np.random.default_rng(step)
    return {
        "w": rng.standard_normal((6, 5)).astype(np.float32),
        "gradients/w": rng.standard_normal((6, 5)),
        "b": rng.integers(-9, 9, size=7).astype(np.int16),
        "flag": np.array(step % 2 == 0),
        "z": rng.standard_normal(3).astype(np.complex64),
    }


def _write_pristine(root: str, seed: int = 0):
    w = StoreWriter(root, 0, segment_bytes=900)
    truth = {}
    for s in range(12):
        arrays = _arrays(s + seed)
        items = [TensorItem(n, "value", ("c",), a) for n, a in arrays.items()]
        if s == 7:  # a step handed over in two parts (flush mid-step), across a segment boundary
            w.submit(StepBatch(s, "train", s, items[:2]))
            items = items[2:]
        w.submit(StepBatch(s, "train", s, items))
        for n, a in arrays.items():
            truth[(n, s)] = (a.dtype, a.shape, a.tobytes())
        if s == 5:
            w.submit_record({"type": "event", "event": "note", "time": 0.0})
    w.close()
    return truth


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A run of 12 steps over several small segments, and every value it holds."""
    root = str(tmp_path_factory.mktemp("fuzz") / "run")
    truth = _write_pristine(root)
    wdir = os.path.join(root, layout.WORKERS_DIR, "worker-0")
    files = sorted(f for f in os.listdir(wdir) if f.endswith((".ttd", ".tti")))
    assert sum(f.endswith(".tti") for f in files) >= 3, files  # several segments
    return root, files, truth


def check_never_misread(root: str, truth: dict) -> int:
    """Open the run and read everything it offers; returns how many values read back intact."""
    trial = tt.create_trial(root)
    ok = 0
    for name in trial.tensor_names():
        for s in trial.tensor(name).steps():
            try:
                v = trial.tensor(name).value(s)
            except ALLOWED:
                continue
            dtype, shape, raw = truth[(name, s)]
            assert v.dtype == dtype and v.shape == shape and v.tobytes() == raw, f"misread {name}@{s}"
            ok += 1
    assert isinstance(trial.problems, list)
    trial.close()
    return ok


def test_pristine_reads_everything(pristine):
    root, _, truth = pristine
    assert check_never_misread(root, truth) == len(truth)


def _mutate(src: str, dst: str, files, ops) -> None:
    shutil.copytree(src, dst)
    wdir = os.path.join(dst, layout.WORKERS_DIR, "worker-0")
    for fi, kind, frac, mask in ops:
        path = os.path.join(wdir, files[fi % len(files)])
        data = bytearray(open(path, "rb").read())
        if not data:
            continue
        pos = min(int(frac * len(data)), len(data) - 1)
        if kind == "trunc":
            data = data[:pos]
        else:
            data[pos] ^= mask
        with open(path, "wb") as f:
            f.write(data)


OPS = st.lists(st.tuples(st.integers(0, 100), st.sampled_from(["flip", "trunc", "flip"]),
                         st.floats(0, 1, allow_nan=False), st.integers(1, 255)), min_size=1, max_size=4)


@settings(max_examples=int(os.environ.get("TT_FUZZ_EXAMPLES", 100)), deadline=3000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_damage_is_detected_never_misread(pristine, ops):
    root, files, truth = pristine
    with tempfile.TemporaryDirectory() as d:
        _mutate(root, os.path.join(d, "run"), files, ops)
        check_never_misread(os.path.join(d, "run"), truth)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The same writing (same shapes, same offsets) with other values: a botched restore's source."""
    root = str(tmp_path_factory.mktemp("fuzz") / "twin")
    _write_pristine(root, seed=1000)
    return root


# misplaced, copied, deleted and emptied files: what a botched restore or a careless cleanup does
MOVES = st.lists(st.tuples(st.sampled_from(["copy", "twin", "delete", "empty"]), st.integers(0, 100),
                           st.integers(0, 100)), min_size=1, max_size=3)


def _move(run: str, twin: str, files, moves) -> None:
    wdir = os.path.join(run, layout.WORKERS_DIR, "worker-0")
    for kind, a, b in moves:
        src, dst = files[a % len(files)], files[b % len(files)]
        if kind == "copy":  # one segment file over another of the same kind (a data over a data ...)
            same = [f for f in files if f.endswith(src[-4:])]
            dst = same[b % len(same)]
            if src != dst and os.path.exists(os.path.join(wdir, src)):
                shutil.copyfile(os.path.join(wdir, src), os.path.join(wdir, dst))
        elif kind == "twin":  # the file of the same name from the other run
            shutil.copyfile(os.path.join(twin, layout.WORKERS_DIR, "worker-0", dst), os.path.join(wdir, dst))
        elif os.path.exists(os.path.join(wdir, dst)):
            if kind == "delete":
                os.remove(os.path.join(wdir, dst))
            else:
                open(os.path.join(wdir, dst), "wb").close()


@settings(max_examples=int(os.environ.get("TT_FUZZ_EXAMPLES", 100)), deadline=3000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=MOVES)
def test_misplaced_missing_and_emptied_files_are_never_misread(pristine, twin, moves):
    """Issue 16 §5: before, a data segment copied over another returned other steps' values."""
    root, files, truth = pristine
    with tempfile.TemporaryDirectory() as d:
        run = os.path.join(d, "run")
        shutil.copytree(root, run)
        _move(run, twin, files, moves)
        check_never_misread(run, truth)
        trial = tt.create_trial(run)  # what it does not even offer is listed (what it offers but refuses is said then)
        offered = {(n, step) for n in trial.tensor_names() for step in trial.tensor(n).steps()}
        assert offered == set(truth) or trial.problems, f"{len(set(truth) - offered)} values lost silently: {moves}"


@settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(min_size=0, max_size=400), where=st.sampled_from(["index", "data", "meta", "marker"]))
def test_arbitrary_bytes_in_place_of_a_file(pristine, blob, where):
    root, files, truth = pristine
    with tempfile.TemporaryDirectory() as d:
        run = os.path.join(d, "run")
        shutil.copytree(root, run)
        wdir = os.path.join(run, layout.WORKERS_DIR, "worker-0")
        target = {"index": os.path.join(wdir, layout.index_file(1)), "data": os.path.join(wdir, layout.data_file(1)),
                  "meta": os.path.join(wdir, layout.META), "marker": os.path.join(run, layout.RUN_MARKER)}[where]
        with open(target, "wb") as f:
            f.write(blob)
        check_never_misread(run, truth)


# ---- forged, checksum-valid records: the reader must still refuse them ------------------------------
def _index_record(header: dict, entries=None) -> bytes:
    return framing.encode(framing.KIND_INDEX, index.encode(header, entries))


def _forged_run(tmp_path, records: bytes, data: bytes = b"") -> str:
    run = tmp_path / "run"
    wdir = run / layout.WORKERS_DIR / "worker-0"
    wdir.mkdir(parents=True)
    (run / layout.RUN_MARKER).write_text('{"format": "tensortap-run", "format_version": 1}')
    (wdir / layout.index_file(0)).write_bytes(records)
    (wdir / layout.data_file(0)).write_bytes(data)
    return str(run)


def test_forged_length_field_does_not_allocate(tmp_path):
    # a header whose own checksum is valid but which claims an exabyte of payload
    huge = struct.pack("<4sBQI", framing.MAGIC, framing.KIND_INDEX, 2 ** 60,
                       framing.crc(struct.pack("<BQ", framing.KIND_INDEX, 2 ** 60)))
    run = _forged_run(tmp_path, huge + b"\0" * 64)
    # a later segment exists, so segment 0 is not a live tail: its unreadable bytes are damage
    open(os.path.join(run, layout.WORKERS_DIR, "worker-0", layout.index_file(1)), "wb").close()
    tracemalloc.start()
    trial = tt.create_trial(run)
    assert trial.steps() == []
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 2 ** 20
    assert any("not a valid record" in p for p in trial.problems)


def test_forged_index_entries_are_refused(tmp_path):
    payload = np.arange(4, dtype=np.float32).tobytes()
    data = framing.encode(framing.KIND_DATA, payload)
    defs = {"type": "defs", "names": [[0, "ok", "value", ["c"]], [1, "huge", "value", ["c"]],
                                      [2, "overflow", "value", ["c"]], [3, "pastend", "value", ["c"]]],
            "dtypes": [[0, "<f4"]], "shapes": [[0, [4]], [1, [2 ** 40, 2 ** 40]], [2, [2 ** 31, 2 ** 31, 2 ** 31, 8]]]}
    e = np.zeros(4, index.ENTRY_DTYPE)
    e[0] = (0, 0, 0, 0, 16)
    e[1] = (1, 0, 1, 0, 2 ** 63)  # claims 8 EB
    e[2] = (2, 0, 2, 0, 16)  # shape product overflows int64 to a small number
    e[3] = (3, 0, 0, 10 ** 12, 16)  # offset far past the file
    recs = _index_record(defs) + _index_record({"type": "step", "step": 0, "mode": "train", "mode_step": 0,
                                                 "time": 0.0}, e)
    run = _forged_run(tmp_path, recs, data)
    trial = tt.create_trial(run)
    assert list(trial.tensor("ok").value(0)) == [0, 1, 2, 3]
    tracemalloc.start()
    for name in ("huge", "overflow", "pastend"):
        with pytest.raises(tt.CorruptRunError, match="damaged"):
            trial.tensor(name).value(0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 2 ** 20


@pytest.mark.parametrize("header", [
    {"type": "defs", "names": 5},
    {"type": "defs", "names": [[0, "x"]]},
    {"type": "defs", "names": [["0", "x", "value", []]]},
    {"type": "defs", "dtypes": [[0, "O"]]},
    {"type": "defs", "dtypes": [[0, "f4,O"]]},
    {"type": "defs", "dtypes": [[0, "(2,)V8"]]},
    {"type": "defs", "dtypes": [[0, {"a": 1}]]},
    {"type": "defs", "shapes": [[0, [-1]]]},
    {"type": "defs", "shapes": [[0, [1] * 100]]},
    {"type": "defs", "shapes": "no"},
    {"type": "step", "step": "0", "mode": "train", "mode_step": 0},
    {"type": "step", "step": 0, "mode": "train", "mode_step": 0, "time": "soon"},
    {"type": "step", "step": -1, "mode": "train", "mode_step": 0},
    {"type": "step", "step": True, "mode": "train", "mode_step": 0},
])
def test_malformed_checksum_valid_index_records_are_skipped(tmp_path, header):
    good = _index_record({"type": "defs", "names": [[0, "a", "value", ["c"]]], "dtypes": [[0, "<f4"]],
                          "shapes": [[0, [4]]]})
    step = _index_record({"type": "step", "step": 0, "mode": "train", "mode_step": 0, "time": 0.0},
                         np.array([(0, 0, 0, 0, 16)], index.ENTRY_DTYPE))
    data = framing.encode(framing.KIND_DATA, np.ones(4, np.float32).tobytes())
    run = _forged_run(tmp_path, good + _index_record(header) + step, data)
    trial = tt.create_trial(run)
    assert list(trial.tensor("a").value(0)) == [1, 1, 1, 1]
    assert any("bad index record" in p for p in trial.problems), trial.problems


def test_big_record_checksummed_across_read_chunks(tmp_path):
    """Arrays bigger than the reader's read chunk: exact when intact, refused when any byte flips."""
    from tensortap.store import reader as reader_mod

    root = str(tmp_path / "run")
    big = np.random.default_rng(5).standard_normal(3 * reader_mod._CHUNK // 8 + 3)  # ~3 chunks, odd tail
    w = StoreWriter(root, 0)
    w.submit(StepBatch(0, "train", 0, [TensorItem("big", "value", ("c",), big)]))
    w.close()
    assert tt.create_trial(root).tensor("big").value(0).tobytes() == big.tobytes()
    path = os.path.join(root, layout.WORKERS_DIR, "worker-0", layout.data_file(0))
    pristine = open(path, "rb").read()
    size = len(pristine)
    start = size - big.nbytes - framing.OVERHEAD  # the record may follow a padding record
    assert start >= 0 and pristine[start:start + 4] == framing.MAGIC
    for pos in (5, framing.HEADER_SIZE, reader_mod._CHUNK - 1, reader_mod._CHUNK, 2 * reader_mod._CHUNK + 7,
                size - start - framing.TRAILER_SIZE - 1, size - start - 2):
        damaged = bytearray(pristine)
        damaged[start + pos] ^= 0x40
        with open(path, "wb") as f:
            f.write(damaged)
        with pytest.raises(tt.CorruptRunError):
            tt.create_trial(root).tensor("big").value(0)


def test_step_written_in_parts_across_segments(tmp_path):
    """A step handed over in two parts (flush mid-step) that land in different segments: each
    value is read from its own segment (same-sized neighbours at the same offset were misread)."""
    root = str(tmp_path / "run")
    w = StoreWriter(root, 0, segment_bytes=1)  # every write starts a new segment
    w.submit(StepBatch(0, "train", 0, [TensorItem("a", "value", ("c",), np.zeros(4, np.float32))]))
    w.submit(StepBatch(0, "train", 0, [TensorItem("b", "value", ("c",), np.ones(4, np.float32))]))
    w.submit(StepBatch(0, "train", 0, [TensorItem("a", "value", ("c",), np.full(4, 7, np.float32)),
                                       TensorItem("c", "value", ("c",), np.full(4, 9, np.float32))]))
    w.close()
    trial = tt.create_trial(root)
    assert trial.steps() == [0]
    assert list(trial.tensor("a").value(0)) == [7, 7, 7, 7]  # the newest part wins
    assert list(trial.tensor("b").value(0)) == [1, 1, 1, 1]
    assert list(trial.tensor("c").value(0)) == [9, 9, 9, 9]


@pytest.mark.parametrize("shift", [0, 1, 4, 8, 16, 40])
def test_big_payloads_are_aligned_like_their_source(tmp_path, shift):
    """A big array's payload lands at a file offset congruent to its address modulo 64 (a
    padding record fills the gap) and reads back bit-exact, whatever the address: aligned or not,
    after small records of odd sizes."""
    root = str(tmp_path / "run")
    backing = np.random.default_rng(shift).integers(0, 255, (1 << 20) + 64, dtype=np.uint8)
    big = backing[shift:shift + (1 << 20)]  # an array at an arbitrary address
    small = np.arange(7, dtype=np.int8)
    w = StoreWriter(root, 0)
    w.submit(StepBatch(0, "train", 0, [TensorItem("s", "value", ("c",), small),
                                       TensorItem("big", "value", ("c",), big),
                                       TensorItem("big2", "value", ("c",), big.view(np.float32))]))
    w.close()
    trial = tt.create_trial(root)
    assert trial.tensor("s").value(0).tobytes() == small.tobytes()
    assert trial.tensor("big").value(0).tobytes() == big.tobytes()
    assert trial.tensor("big2").value(0).tobytes() == big.tobytes()
    data = open(os.path.join(root, layout.WORKERS_DIR, "worker-0", layout.data_file(0)), "rb").read()
    # every byte belongs to a record, padding included (a bare scan cannot verify a data record's
    # checksum: it is bound to its index entry, and the reads above verified it)
    records = list(framing.iter_records_verbose(data))
    assert records[-1].next_offset == len(data)
    kinds = [r.kind for r in records]
    assert kinds.count(framing.KIND_DATA) == 3 and set(kinds) <= {framing.KIND_DATA, framing.KIND_PAD}
    for r in records:
        if r.kind == framing.KIND_DATA and r.next_offset - r.offset - framing.OVERHEAD == big.nbytes:
            assert (r.offset + framing.HEADER_SIZE - big.ctypes.data) % 64 == 0


@pytest.mark.parametrize("offset", [0, 3, 17, 60, 63, 64, 4095])
def test_pad_before_lands_the_payload_on_the_address(offset):
    for address in (0, 16, 33, 4096 + 48):
        gap = framing.pad_before(offset, address)
        assert gap == 0 or gap >= framing.OVERHEAD
        assert (offset + gap + framing.HEADER_SIZE - address) % 64 == 0
        if gap:
            assert len(framing.pad(gap)) == gap
