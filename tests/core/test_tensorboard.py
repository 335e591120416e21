"""TensorBoard export: event files with real masked CRC32C, read back by TensorBoard's own
EventAccumulator and served by `tensorboard --logdir`. The core writes them without tensorflow."""
from __future__ import annotations

import glob
import io
import json
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request

import numpy as np
import pytest

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.export import export_tensorboard
from tensortap.export.tfevents import frame, masked_crc
from tests.core.test_vis_runs import gradcam_run, mlp_run

# TensorBoard's reader with its own pure-Python record reader (CRC-checking), not TensorFlow's: the same
# EventAccumulator without a 20 s tensorflow import. `tensorboard --logdir` below runs the default path.
if "tensorflow" not in sys.modules:  # (already imported by another test: nothing to save, leave it be)
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                         reason="needs the tensorboard package to read event files back")


def crc32c_reference(data: bytes) -> int:
    """Bitwise CRC32C (Castagnoli, reflected polynomial 0x82F63B78): independent of the crc32c package."""
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c ^ 0xFFFFFFFF


def test_framing_uses_real_masked_crc32c():
    assert crc32c_reference(b"123456789") == 0xE3069283  # the standard check value
    for data in (b"", b"tensortap", bytes(range(256)) * 3):
        c = crc32c_reference(data)
        assert masked_crc(data) == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    rec = frame(b"hello")
    assert rec[:8] == (5).to_bytes(8, "little") and rec[12:17] == b"hello" and len(rec) == 8 + 4 + 5 + 4


def test_the_core_export_does_not_import_tensorflow():
    code = ("import sys, tempfile, tensortap.export as e; from tests.core.test_vis_runs import gradcam_run; "
            "d = tempfile.mkdtemp(); e.export_tensorboard(gradcam_run(d + '/r', steps=1), d + '/tb'); "
            "print(sorted(m for m in ('tensorflow', 'tensorboard', 'google.protobuf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("tb")
    run = mlp_run(str(d / "mlp"), steps=10, eval_every=5)
    gc = gradcam_run(str(d / "gc"))
    return {"run": run, "tb": str(d / "tb"), "counts": export_tensorboard(run, str(d / "tb")),
            "gc": gc, "gc_tb": str(d / "gc_tb"), "gc_counts": export_tensorboard(gc, str(d / "gc_tb"))}


def _acc(logdir: str):
    a = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0})
    a.Reload()
    return a


def test_scalars_per_mode_read_back_by_event_accumulator(exported):
    trial = tt.create_trial(exported["run"])
    assert set(exported["counts"]) == {"train", "eval"}
    for mode in ("train", "eval"):
        acc = _acc(os.path.join(exported["tb"], mode))
        got = [(e.step, e.value) for e in acc.Scalars("loss")]
        want = [(s, float(np.float32(trial.tensor("loss").value(s)))) for s in trial.tensor("loss").steps()
                if trial.mode(s).value == mode]
        assert got == want and len(got) > 1
    acc = _acc(os.path.join(exported["tb"], "eval"))
    assert [e.step for e in acc.Scalars("accuracy")] == trial.tensor("accuracy").steps()


def test_histograms_read_back_with_counts_of_the_tensor(exported):
    trial = tt.create_trial(exported["run"])
    acc = _acc(os.path.join(exported["tb"], "train"))
    assert {"fc1.weight", "gradients/fc2.weight"} <= set(acc.Tags()["histograms"])
    h = acc.Histograms("fc1.weight")[0]
    v = trial.tensor("fc1.weight").value(h.step).astype(np.float64)
    hv = h.histogram_value
    assert hv.num == v.size and hv.min == v.min() and hv.max == v.max()
    assert sum(hv.bucket) == v.size and np.isclose(hv.sum, v.sum())


def test_gradcam_images_read_back_as_pngs(exported):
    from PIL import Image

    acc = _acc(os.path.join(exported["gc_tb"], "train"))
    imgs = acc.Images("gradcam/layer4")
    assert [i.step for i in imgs] == [0, 1, 2]
    im = Image.open(io.BytesIO(imgs[-1].encoded_image_string))
    assert im.size == (imgs[-1].width, imgs[-1].height) and im.size[0] > 200


def test_a_corrupted_record_is_dropped_by_tensorboard_so_the_checksums_are_checked(exported, tmp_path):
    src = glob.glob(os.path.join(exported["tb"], "train", "events.out.tfevents.*"))[0]
    data = bytearray(open(src, "rb").read())
    data[-6] ^= 0xFF  # a byte of the last record's payload
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / os.path.basename(src)).write_bytes(bytes(data))
    good = [e.step for e in _acc(os.path.dirname(src)).Scalars("loss")]
    bad = [e.step for e in _acc(str(tmp_path / "bad")).Scalars("loss")]
    assert bad == good[:-1]


def test_cli_export_prints_how_to_view(exported, tmp_path, capsys):
    assert cli(["export-tensorboard", exported["gc"], "--out", str(tmp_path / "tb"), "--no-images"]) == 0
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out and "0 images" in out


@pytest.mark.slow
def test_tensorboard_serves_the_exported_run(exported):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", exported["tb"], "--port", str(port),
                             "--host", "127.0.0.1", "--load_fast", "false", "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        deadline = time.monotonic() + 90
        tags = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
                if "loss" in tags.get("train", {}) and "accuracy" in tags.get("eval", {}):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert tags and "loss" in tags.get("train", {}), f"tensorboard served {tags}"
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=train&tag=loss"
        with urllib.request.urlopen(url, timeout=10) as r:
            points = json.loads(r.read())
        assert len(points) == len(_acc(os.path.join(exported["tb"], "train")).Scalars("loss"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
