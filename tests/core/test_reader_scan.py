"""Reading one tensor across every step of a wide run keeps the reader's memory flat: lookup
tables are built only for steps read tensor after tensor, and only the most recent ones kept."""
from __future__ import annotations

import numpy as np

import tensortap as tt
from tensortap.store import StepBatch, StoreWriter, TensorItem
from tensortap.store import reader


def _wide_run(root: str, steps: int, tensors: int) -> None:
    w = StoreWriter(root, 0)
    for s in range(steps):
        items = [TensorItem(f"t{i}", "value", ("weights",), np.full(2, s + i, np.float32)) for i in range(tensors)]
        w.submit(StepBatch(s, "train", s, items))
    w.close()


def _tables(trial) -> int:
    return sum(si._pos is not None or si._rows is not None
               for r in trial._readers() for si in r.steps.values())


def test_a_scan_across_steps_builds_no_per_step_tables(tmp_path):
    root = str(tmp_path / "run")
    _wide_run(root, 600, 200)
    trial = tt.create_trial(root)
    t = trial.tensor("t7")
    vals = [float(t.value(s)[0]) for s in t.steps()]
    assert vals == [s + 7.0 for s in range(600)]
    assert _tables(trial) == 0, "a one-tensor scan built a lookup table per step"
    # a step read tensor after tensor (what a rule does) gets its tables, bounded in number
    for s in range(400):
        got = trial.values_at([f"t{i}" for i in range(50)], s)
        assert float(got["t49"][0]) == s + 49.0
    assert 0 < _tables(trial) <= reader._HOT.size
    # lookups stay right whether through the tables or the binary search
    assert not reader.StepIndex(0, "train", 0, 0, np.zeros(0, _entry_dtype()), 0.0).has(3)


def _entry_dtype():
    from tensortap.store import index

    return index.ENTRY_DTYPE
