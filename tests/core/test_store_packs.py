"""Store format 4: a step's small arrays share "pack" records. A reductions-only step costs at most
twice its raw values on disk (it cost 2.4x with a record per array); every packed array reads back
bit-exact and aligned, one by one and together; a damaged pack is refused, never misread."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensortap as tt
from tensortap.store import framing, layout
from tensortap.store.writer import PACK_BYTES, PACK_MAX

REDUCTIONS = ["min", "max", "mean", "std", "l2"]
# the parameter shapes of a small ResNet-style CNN (conv, batch-norm, linear): 53 tensors
SHAPES = ([(16, 3, 3, 3), (16,), (16,), (16,)] + [(32, 16, 3, 3), (32,), (32,), (32,)] * 6
          + [(64, 32, 3, 3), (64,), (64,), (64,)] * 6 + [(10, 64), (10,), (10,), (10,), (10,)])


def _disk(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def test_a_reductions_only_step_is_at_most_twice_its_raw_values(tmp_path):
    root = str(tmp_path / "run")
    coll = tt.Collection("red", include_regex=[".*"], reduction_config=tt.ReductionConfig(reductions=REDUCTIONS))
    hook = tt.Hook(root, include_collections=[coll], save_config=tt.SaveConfig(save_interval=1))
    rng = np.random.default_rng(0)
    arrays = {f"layer{i}.{'w' if len(s) > 1 else 'b'}": rng.standard_normal(s).astype(np.float32)
              for i, s in enumerate(SHAPES)}
    steps = 12
    for _ in range(steps):
        hook.begin_step(tt.modes.TRAIN)
        for n, a in arrays.items():
            hook.save_tensor(n, a, collections=["red"])
            hook.save_tensor(f"gradients/{n}", a * 0.5, collections=["red"])
    hook.close()
    raw = 2 * len(arrays) * len(REDUCTIONS) * 8  # five float64 per tensor: computed from the model alone
    trial = tt.create_trial(root)
    assert trial.total_bytes() == raw * steps and trial.problems == []
    per_step = _disk(root) / steps
    assert per_step <= 2 * raw, f"{per_step:.0f} bytes on disk per step for {raw} bytes of reductions"
    a = arrays["layer0.w"].astype(np.float64)
    got = trial.tensor("layer0.w").reduction_values(5)
    assert got["l2"] == np.sqrt((a * a).sum()) and got["max"] == a.max() and got["min"] == a.min()


def _mixed(step: int) -> dict:
    rng = np.random.default_rng(step)
    out = {
        "f4": rng.standard_normal((4, 5)).astype(np.float32),
        "f8": rng.standard_normal(7),
        "i2": rng.integers(-300, 300, size=7).astype(np.int16),
        "flag": np.array(step % 2 == 0),
        "c8": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "c16": rng.standard_normal(5) + 1j * rng.standard_normal(5),
        "f2": rng.standard_normal((2, 3)).astype(np.float16),
        "s": np.array([f"a{step}", "bé"], dtype="<U5"),
        "empty": np.zeros((0, 3), np.float32),
        "mid": rng.standard_normal(3000).astype(np.float32),  # 12 kB: a record of its own
        "big": rng.standard_normal((128, 130)).astype(np.float32),  # > 64 KiB: the big-record path
    }
    for i in range(40):  # enough small arrays to fill more than one pack
        out[f"v{i}"] = rng.standard_normal(100 + i)
    return out


def test_packed_arrays_read_back_bit_exact_and_aligned(tmp_path):
    root = str(tmp_path / "run")
    hook = tt.Hook(root, include_collections=["things"], save_config=tt.SaveConfig(save_interval=1))
    for step in range(3):
        hook.begin_step(tt.modes.TRAIN)
        for n, a in _mixed(step).items():
            hook.save_tensor(n, a, collections=["things"])
    hook.close()
    with open(os.path.join(root, layout.WORKERS_DIR, "worker-0", layout.data_file(0)), "rb") as f:
        data = f.read()
    records = [r for r in framing.iter_records_verbose(data) if r.kind == framing.KIND_DATA]
    # per step: 'mid', 'big' and packs holding the 49 small arrays (38.6 kB), at most PACK_BYTES each
    small = sum(a.nbytes for a in _mixed(0).values() if a.nbytes <= PACK_MAX)
    packs = [r for r in records if r.next_offset - r.offset - framing.OVERHEAD <= PACK_BYTES]
    assert len(records) - len(packs) == 3 * 2
    assert 3 * -(-small // PACK_BYTES) <= len(packs) <= 3 * 49 // 2, len(packs)
    trial = tt.create_trial(root)
    assert trial.problems == []
    for step in range(3):
        want = _mixed(step)
        together = trial.values_at(list(want), step)
        assert sorted(together) == sorted(want)
        for n, a in want.items():
            for got in (trial.tensor(n).value(step), together[n]):
                assert got.dtype == a.dtype and got.shape == a.shape, n
                assert got.tobytes() == a.tobytes(), (n, step)
                assert got.flags.aligned, n


def test_a_damaged_pack_is_refused_and_the_other_steps_read(tmp_path):
    root = str(tmp_path / "run")
    hook = tt.Hook(root, include_collections=["things"], save_config=tt.SaveConfig(save_interval=1))
    values = {}
    for step in range(3):
        hook.begin_step(tt.modes.TRAIN)
        for n in ("a", "b"):
            values[(n, step)] = np.full(16, step * 10 + (n == "b"), np.float32)
            hook.save_tensor(n, values[(n, step)], collections=["things"])
    hook.close()
    path = os.path.join(root, layout.WORKERS_DIR, "worker-0", layout.data_file(0))
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    at = blob.find(values[("b", 1)].tobytes())  # step 1's pack, in 'b's bytes
    assert at > 0
    blob[at] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(blob))
    trial = tt.create_trial(root)
    for (n, step), want in values.items():
        if step == 1:  # both arrays share the damaged pack: neither is returned
            with pytest.raises(tt.CorruptRunError, match="checksum mismatch"):
                trial.tensor(n).value(step)
            assert n not in trial.values_at([n], step)
        else:
            assert trial.tensor(n).value(step).tobytes() == want.tobytes()
