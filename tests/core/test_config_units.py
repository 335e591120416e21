"""SaveConfig, ReductionConfig / reduce_numpy, Collection and modes: hand-computed expectations."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tensortap as tt
from tensortap.collections import Collection
from tensortap.reductions import histogram, reduce_numpy, split_histogram
from tensortap.save_config import SaveConfigMode


# ---- SaveConfig ----------------------------------------------------------------------------------
def saved(cfg, mode=tt.modes.TRAIN, n=30):
    return [s for s in range(n) if cfg.should_save(mode, s)]


def test_interval_and_default():
    assert saved(tt.SaveConfig(save_interval=10)) == [0, 10, 20]
    assert saved(tt.SaveConfig(save_interval=1), n=4) == [0, 1, 2, 3]
    assert saved(tt.SaveConfig(), n=250) == [0, 100, 200]  # smdebug's default interval


def test_explicit_steps_only_and_with_interval():
    assert saved(tt.SaveConfig(save_steps=[3, 1, 3, 17])) == [1, 3, 17]
    assert saved(tt.SaveConfig(save_interval=10, save_steps=[5])) == [0, 5, 10, 20]


def test_start_end_step_interval_counts_from_start():
    # start 5, end 25 exclusive, every 7 steps counted from start: 5, 12, 19
    assert saved(tt.SaveConfig(save_interval=7, start_step=5, end_step=25)) == [5, 12, 19]
    assert saved(tt.SaveConfig(save_steps=[2, 8, 30], start_step=3, end_step=30), n=40) == [8]


def test_per_mode_configs():
    cfg = tt.SaveConfig({tt.modes.TRAIN: SaveConfigMode(save_interval=5),
                         "eval": {"save_steps": [1, 2]},
                         tt.modes.PREDICT: tt.SaveConfig(save_interval=3)}, save_interval=2)
    assert saved(cfg, tt.modes.TRAIN, 12) == [0, 5, 10]
    assert saved(cfg, tt.modes.EVAL, 12) == [1, 2]
    assert saved(cfg, tt.modes.PREDICT, 12) == [0, 3, 6, 9]
    assert saved(cfg, tt.modes.GLOBAL, 6) == [0, 2, 4]  # the base config applies to unlisted modes
    d = cfg.to_dict()
    assert d["train"]["save_interval"] == 5 and d["eval"]["save_steps"] == [1, 2]
    assert cfg == tt.SaveConfig({tt.modes.TRAIN: SaveConfigMode(save_interval=5),
                                 "eval": {"save_steps": [1, 2]},
                                 tt.modes.PREDICT: tt.SaveConfig(save_interval=3)}, save_interval=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"save_interval": 0}, "positive int"),
    ({"save_interval": -3}, "positive int"),
    ({"save_interval": 2.5}, "positive int"),
    ({"save_steps": [-1]}, ">= 0"),
    ({"start_step": -2}, ">= 0"),
    ({"start_step": 5, "end_step": 5}, "greater than start_step"),
])
def test_save_config_rejects_bad_values(kwargs, match):
    with pytest.raises(tt.ConfigError, match=match):
        tt.SaveConfig(**kwargs)


def test_save_config_bad_mode_and_value():
    with pytest.raises(tt.ConfigError, match="unknown mode"):
        tt.SaveConfig({"training": SaveConfigMode(save_interval=1)})
    with pytest.raises(tt.ConfigError, match="SaveConfigMode"):
        tt.SaveConfig({"train": 5})


# ---- modes ---------------------------------------------------------------------------------------
def test_modes():
    from tensortap.modes import to_mode

    assert to_mode("train") is tt.modes.TRAIN
    assert to_mode("EVAL") is tt.modes.EVAL
    assert to_mode(tt.modes.PREDICT) is tt.modes.PREDICT
    assert to_mode(None) is None
    assert str(tt.modes.GLOBAL) == "global"
    with pytest.raises(tt.ConfigError, match="unknown mode 'test'"):
        to_mode("test")


# ---- reductions ----------------------------------------------------------------------------------
def test_reduce_numpy_hand_computed():
    a = np.array([[3.0, -4.0], [0.0, 1.0]], np.float32)
    r = reduce_numpy(a, ["min", "max", "mean", "sum", "l1", "l2", "abs_min", "abs_max", "abs_mean",
                         "zero_count", "nan_count", "inf_count", "variance", "std"])
    assert r["min"] == -4 and r["max"] == 3 and r["mean"] == 0.0 and r["sum"] == 0.0
    assert r["l1"] == 8 and r["l2"] == math.sqrt(26)
    assert r["abs_min"] == 0 and r["abs_max"] == 4 and r["abs_mean"] == 2
    assert r["zero_count"] == 1 and r["nan_count"] == 0 and r["inf_count"] == 0
    assert r["variance"] == pytest.approx(26 / 4) and r["std"] == pytest.approx(math.sqrt(26 / 4))
    assert all(v.dtype == np.float64 for v in r.values())


def test_reduce_nan_inf_int_bool_complex_empty():
    r = reduce_numpy(np.array([1.0, np.nan, np.inf, -np.inf]), ["nan_count", "inf_count", "max"])
    assert r["nan_count"] == 1 and r["inf_count"] == 2 and np.isnan(r["max"])
    assert reduce_numpy(np.array([1, 2, 3], np.int8), ["mean", "sum"])["sum"] == 6
    assert reduce_numpy(np.array([True, False, True]), ["mean"])["mean"] == pytest.approx(2 / 3)
    assert reduce_numpy(np.array([3 + 4j]), ["l2"])["l2"] == 5  # complex: magnitudes
    e = reduce_numpy(np.zeros((0, 3)), ["mean", "zero_count", "nan_count"])
    assert np.isnan(e["mean"]) and e["zero_count"] == 0 and e["nan_count"] == 0


def test_histogram_packs_counts_and_edges():
    packed = histogram(np.array([0.0, 0.0, 1.0, 2.0, np.nan]), 2)
    counts, edges = split_histogram(packed)
    assert list(counts) == [2, 2] and list(edges) == [0.0, 1.0, 2.0]  # NaN ignored, last bin closed
    counts, edges = split_histogram(histogram(np.full(4, 7.0), 4))
    assert counts.sum() == 4 and edges[0] == 6.5 and edges[-1] == 7.5  # constant: widened range
    counts, edges = split_histogram(histogram(np.array([]), 3))
    assert counts.sum() == 0 and len(edges) == 4


def test_reduction_config_errors():
    with pytest.raises(tt.ConfigError, match='Did you mean "mean"'):
        tt.ReductionConfig(reductions=["meen"])
    with pytest.raises(tt.ConfigError, match=r"write reductions=\['l2'\]"):
        tt.ReductionConfig(reductions="l2")
    with pytest.raises(tt.ConfigError, match="histogram_bins"):
        tt.ReductionConfig(reductions=["histogram"], histogram_bins=0)


# ---- collections ---------------------------------------------------------------------------------
def test_collection_membership():
    w = Collection("weights")
    assert w.includes("fc1.weight", "weights") and not w.includes("fc1.weight", "gradients")
    c = Collection("convs", include_regex=["^conv", r"\.bias$"], tensor_names={"extra"})
    assert c.includes("conv1.weight", "weights") and c.includes("fc.bias", "biases")
    assert c.includes("extra", "scalars") and not c.includes("fc.weight", "weights")
    scoped = Collection("grads_of_fc", include_regex=["fc"], categories=("gradients",))
    assert scoped.includes("gradients/fc.weight", "gradients")
    assert not scoped.includes("fc.weight", "weights")
    assert scoped.wants_category("gradients") and not scoped.wants_category("weights")
    assert Collection("x", include_regex="a.c").include_regex == ("a.c",)


def test_collection_errors():
    with pytest.raises(tt.ConfigError, match="invalid include_regex"):
        Collection("bad", include_regex=["conv[("])
    with pytest.raises(tt.ConfigError, match="non-empty string name"):
        Collection("")
    with pytest.raises(tt.ConfigError, match="save_config must be a tt.SaveConfig"):
        Collection("c", save_config={"save_interval": 2})
    with pytest.raises(tt.ConfigError, match="reduction_config must be a tt.ReductionConfig"):
        Collection("c", reduction_config=["l2"])
