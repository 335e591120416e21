"""The bad-input catalogue: dtypes, odd shapes, special values, unusable out_dirs, runs that are
not runs, and runs from a newer tensortap. Each either works exactly or fails with a clear error."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

import tensortap as tt
from tensortap.store import layout

VALUES = {
    "f16": np.array([1.5, -0.0, 65504.0], np.float16),
    "f64": np.array([[1e-300, 2.5]], np.float64),
    "bool": np.array([True, False, True]),
    "i8": np.array([-128, 127], np.int8),
    "u64": np.array([2 ** 64 - 1], np.uint64),
    "i32_3d": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
    "c64": np.array([1 + 2j, -3.5j], np.complex64),
    "c128": np.array([np.nan + 1j, np.inf - 1j]),
    "scalar0d": np.array(3.25, np.float32),
    "numpy_scalar": np.float64(-7.0),
    "empty": np.zeros((0, 5), np.float32),
    "empty_1d": np.array([], np.int64),
    "nan_inf": np.array([np.nan, np.inf, -np.inf, 0.0], np.float32),
    "unicode": np.array(["héllo", "w"]),
    "bytes": np.array([b"ab", b"\x00c"]),
    "noncontig": np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2],
    "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    "big_endian": np.array([1.0, 2.0], ">f4"),
}


def _same(got: np.ndarray, want) -> bool:
    want = np.asarray(want)
    return got.shape == want.shape and got.dtype == want.dtype and got.tobytes() == np.ascontiguousarray(want).tobytes()


def test_dtypes_shapes_and_special_values_round_trip(run_dir):
    hook = tt.Hook(run_dir, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    hook.begin_step()
    for name, v in VALUES.items():
        hook.save_tensor(name, v, collections=["odd"])
    hook.close()
    assert hook.errors == []
    trial = tt.create_trial(run_dir)
    for name, v in VALUES.items():
        got = trial.tensor(name).value(0)
        assert _same(got, v), (name, got, v)
    assert trial.tensor("scalar0d").value(0).shape == ()
    assert np.isnan(trial.tensor("nan_inf").value(0)[0])


def test_bfloat16_round_trips_and_reduces(run_dir):
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 comes from the ml_dtypes package")
    bf = np.array([1.0, -2.5, 3.140625, np.inf], ml_dtypes.bfloat16)
    f8 = np.array([0.5, -1.0], ml_dtypes.float8_e4m3fn)
    hook = tt.Hook(run_dir, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    hook.save_tensor("bf16", bf, collections=["odd"])
    hook.save_tensor("f8", f8, collections=["odd"])
    hook.close()
    assert hook.errors == []
    trial = tt.create_trial(run_dir)
    got = trial.tensor("bf16").value(0)
    assert got.dtype == bf.dtype and got.tobytes() == bf.tobytes()
    assert trial.tensor("f8").value(0).dtype == f8.dtype
    from tensortap.reductions import reduce_numpy
    r = reduce_numpy(bf, ["max", "inf_count", "min"])
    assert r["inf_count"] == 1 and r["min"] == -2.5


def test_object_arrays_refused_clearly(run_dir):
    hook = tt.Hook(run_dir, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    with pytest.raises(tt.ConfigError, match="cannot save 'objs': dtype object"):
        hook.save_tensor("objs", np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(tt.ConfigError, match="non-empty strings"):
        hook.save_scalar("", 1.0)
    hook.close()


def test_out_dir_inside_a_regular_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(tt.ConfigError, match="is a file"):
        tt.Hook(str(f))
    with pytest.raises(tt.ConfigError, match="pass a directory you can write to"):
        tt.Hook(str(f / "run"))  # ENOTDIR: even root cannot create a directory inside a file


def test_out_dir_not_creatable():
    with pytest.raises(tt.ConfigError, match="pass a directory you can write to"):
        tt.Hook("/proc/tensortap-cannot-exist/run")


def test_out_dir_read_only_filesystem(tmp_path):
    """A real read-only mount (root ignores permission bits, not a read-only file system)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
    try:
        with pytest.raises(tt.ConfigError, match="not writable|read-only|pass a directory"):
            tt.Hook(str(mnt / "run"))
        with pytest.raises(tt.ConfigError):
            tt.Hook(str(mnt))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_not_a_run(tmp_path):
    with pytest.raises(tt.NotARunError, match="does not exist"):
        tt.create_trial(str(tmp_path / "nope"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    with pytest.raises(tt.NotARunError, match="is not a tensortap run"):
        tt.create_trial(str(tmp_path / "plain"))
    with pytest.raises(tt.NotARunError, match="is a file"):
        tt.create_trial(str(tmp_path / "plain" / "notes.txt"))
    t0 = __import__("time").monotonic()
    with pytest.raises(tt.NotARunError):
        tt.create_trial(str(tmp_path / "later"), wait_seconds=0.3)
    assert __import__("time").monotonic() - t0 >= 0.3


def _small_run(run_dir):
    hook = tt.Hook(run_dir, include_collections=["scalars"], save_config=tt.SaveConfig(save_interval=1))
    hook.save_scalar("a", 1.0)
    hook.close()


def test_run_from_a_newer_tensortap_marker(run_dir):
    _small_run(run_dir)
    marker = os.path.join(run_dir, layout.RUN_MARKER)
    info = json.load(open(marker))
    info["format_version"] = layout.FORMAT_VERSION + 1
    json.dump(info, open(marker, "w"))
    with pytest.raises(tt.NotARunError, match=f"store format {layout.FORMAT_VERSION + 1}.*Upgrade tensortap"):
        tt.create_trial(run_dir)


def test_run_from_a_newer_tensortap_worker_meta(run_dir):
    _small_run(run_dir)
    meta = os.path.join(run_dir, layout.WORKERS_DIR, "worker-0", layout.META)
    m = json.load(open(meta))
    m.update(format_version=layout.FORMAT_VERSION + 5, tensortap_version="99.0")
    json.dump(m, open(meta, "w"))
    with pytest.raises(tt.NotARunError, match="written by tensortap 99.0.*Upgrade tensortap"):
        tt.create_trial(run_dir)


def test_reusing_an_out_dir_is_refused(run_dir):
    _small_run(run_dir)
    with pytest.raises(tt.ConfigError, match="already holds a run"):
        _small_run(run_dir)


def test_unknown_rule_action_and_visualizer_names():
    rules = tt.rules.list()
    if rules:
        wrong = rules[0][:-1] + ("x" if rules[0][-1] != "x" else "y")
        with pytest.raises(tt.ConfigError, match=f'unknown rule {wrong!r}. Did you mean "{rules[0]}"'):
            tt.rules.get(wrong)
    with pytest.raises(tt.ConfigError, match="unknown rule 'no_such_rule_anywhere'.*Registered rules"):
        tt.rules.get("no_such_rule_anywhere")
    with pytest.raises(tt.ConfigError, match='unknown action \'stop_trainig\'. Did you mean "stop_training"'):
        tt.rules.get_action("stop_trainig")
    with pytest.raises(tt.ConfigError, match="unknown visualizer"):
        tt.vis.get("no_such_visualizer_anywhere")
