"""Reductions stored as ONE packed float64 record per tensor and step ("reductions:a,b,..."),
read back per name, all at once, with abs=, and runs of the older one-record-per-reduction
format ("reduction:<name>") still read."""
from __future__ import annotations

import time

import numpy as np
import pytest

import tensortap as tt
from tensortap.reductions import (REDUCTIONS, canonical, pack, packed_kind, parse_packed, reduce_numpy,
                                  reduce_numpy_packed, unpack)
from tensortap.store import StepBatch, StoreWriter, TensorItem
from tt_store_helpers import train_mlp

ALL = list(REDUCTIONS)


def test_pack_unpack_round_trip_in_canonical_order():
    names = canonical(["histogram", "l2", "min", "l2", "nan_count"])
    assert names == ("min", "l2", "nan_count", "histogram")
    assert parse_packed(packed_kind(names)) == names and parse_packed("reduction:l2") is None
    a = np.array([[3.0, -4.0], [np.nan, 0.5]], np.float32)
    want = reduce_numpy(a, names, 4)
    vec = reduce_numpy_packed(a, names, 4)
    assert vec.dtype == np.float64 and vec.shape == (3 + 2 * 4 + 1,)
    assert np.array_equal(vec, pack(want, names), equal_nan=True)
    assert np.isnan(unpack(vec, names, "min")) and unpack(vec, names, "nan_count") == 1.0
    counts, edges = unpack(vec, names, "histogram")
    assert np.array_equal(counts, want["histogram"][:4]) and np.array_equal(edges, want["histogram"][4:])


def _records_of(trial, name):
    return sorted(kind for r in trial._readers() for (n, kind) in r.nid_of if n == name)


def test_one_record_per_tensor_and_step_agreeing_with_reduce_numpy(run_url):
    snaps = train_mlp(run_url, steps=3, save_interval=1, include=["weights", "gradients"],
                      reduction_config=tt.ReductionConfig(reductions=ALL, histogram_bins=8))
    trial = tt.create_trial(run_url)
    assert _records_of(trial, "fc1.weight") == [packed_kind(canonical(ALL))]
    for step in (0, 2):
        for name, arr in (("fc1.weight", snaps[step]["params"]["fc1.weight"]),
                          ("gradients/fc2.bias", snaps[step]["grads"]["fc2.bias"])):
            t = trial.tensor(name)
            want = reduce_numpy(arr, ALL, 8)
            got = t.reduction_values(step)
            assert list(got) == ALL and t.reduction_names(step) == sorted(ALL)
            for r in ALL:
                if r == "histogram":
                    counts, edges = t.reduction_value(step, r)
                    assert np.array_equal(np.concatenate([counts, edges]), want[r])
                    assert np.array_equal(np.concatenate(got[r]), want[r])
                else:
                    assert t.reduction_value(step, r) == float(want[r]), (name, step, r)
                    assert got[r] == float(want[r])
            assert t.reduction_value(step, "max", abs=True) == float(want["abs_max"])
            assert t.reduction_value(step, "l2", abs=True) == float(want["l2"])  # |x| has the same norms


def test_missing_reduction_and_step_say_what_was_saved(run_dir):
    train_mlp(run_dir, steps=2, save_interval=1, include=["weights"],
              reduction_config=tt.ReductionConfig(reductions=["mean", "l2"]))
    t = tt.create_trial(run_dir).tensor("fc1.weight")
    with pytest.raises(tt.StepNotFound, match=r"reduction 'std' of 'fc1.weight' was not saved at step 1 "
                                              r"\(saved there: \['l2', 'mean'\]\)"):
        t.reduction_value(1, "std")
    with pytest.raises(tt.StepNotFound, match="abs_min"):
        t.reduction_value(1, "min", abs=True)
    with pytest.raises(tt.StepNotFound, match="step 7 was not saved"):
        t.reduction_values(7)
    with pytest.raises(tt.StepNotFound, match="only reductions of 'fc1.weight' were saved at step 0"):
        t.value(0)


def test_collections_with_different_reductions_share_one_packed_record(run_dir):
    hook = tt.Hook(run_dir, include_collections=[
        tt.Collection("a", include_regex=["w"], reduction_config=tt.ReductionConfig(reductions=["max"])),
        tt.Collection("b", include_regex=["w"], reduction_config=tt.ReductionConfig(reductions=["min", "l2"])),
    ], save_config=tt.SaveConfig(save_interval=1))
    w = np.arange(6, dtype=np.float32) - 2
    hook.save_tensor("w", w, collections=["a"])
    hook.close()
    trial = tt.create_trial(run_dir)
    assert _records_of(trial, "w") == ["reductions:min,max,l2"]
    assert trial.tensor("w").reduction_value(0, "max", abs=True) == 3.0  # from min and max
    l2 = float(np.sqrt((w.astype(np.float64) ** 2).sum()))
    assert trial.tensor("w").reduction_values(0) == {"min": -2.0, "max": 3.0, "l2": pytest.approx(l2)}


def test_runs_with_one_record_per_reduction_still_read(tmp_path):
    """A run written before packing: one scalar record per reduction, histogram as one vector."""
    run = str(tmp_path / "old")
    w = StoreWriter(run, 0, {"framework": "numpy"})
    a = np.linspace(-1, 2, 12, dtype=np.float32)
    old = reduce_numpy(a, ["min", "max", "l2", "histogram"], 4)
    items = [TensorItem("w", "reduction:" + r, ("weights",), np.asarray(v, dtype=np.float64)) for r, v in old.items()]
    w.submit(StepBatch(0, "train", 0, items, time.time()))
    # a later step of the same run in the packed format (a resumed run with a newer tensortap)
    names = canonical(["mean", "max"])
    w.submit(StepBatch(1, "train", 1, [TensorItem("w", packed_kind(names), ("weights",),
                                                  reduce_numpy_packed(a * 2, names))], time.time()))
    w.close()
    t = tt.create_trial(run).tensor("w")
    assert t.reduction_value(0, "l2") == float(old["l2"]) and t.reduction_value(0, "min") == -1.0
    counts, edges = t.reduction_value(0, "histogram")
    assert counts.sum() == 12 and len(edges) == 5
    assert list(t.reduction_values(0)) == ["min", "max", "l2", "histogram"]
    assert t.reduction_names(0) == ["histogram", "l2", "max", "min"]
    assert t.reduction_value(1, "max") == 4.0 and t.reduction_value(1, "mean") == pytest.approx(float((a * 2).mean()))
    assert t.reduction_names(1) == ["max", "mean"] and t.steps() == [0, 1]
    with pytest.raises(tt.StepNotFound, match=r"saved there: \['max', 'mean'\]"):
        t.reduction_value(1, "l2")


def test_tensorboard_export_reads_packed_reductions(tmp_path):
    run = str(tmp_path / "run")
    train_mlp(run, steps=2, save_interval=1, include=["weights"],
              reduction_config=tt.ReductionConfig(reductions=["mean", "l2"]))
    from tensortap.export.tensorboard import _scalar_reductions

    got = _scalar_reductions(tt.create_trial(run))
    assert got["fc1.weight"] == ["l2", "mean"]
