"""The `tensortap` command: --version, ls (text and --json), plugins, and clear errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import tensortap as tt
from tensortap.testing.fixtures import tt_new_run_url
from tt_store_helpers import train_mlp


def tensortap(*args):
    exe = shutil.which("tensortap", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from tensortap.cli import main; sys.exit(main())"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=["local", "s3"])
def run(request):
    d = tt_new_run_url(request, request.param, "cli")
    snaps = train_mlp(d, steps=30, save_interval=10)
    return d, snaps


def test_version():
    r = tensortap("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"tensortap {tt.__version__}"


def test_ls_json(run):
    d, snaps = run
    r = tensortap("ls", d, "--json", "--tensors")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["steps"] == 3 and s["first_step"] == 0 and s["last_step"] == 20
    assert s["steps_per_mode"] == {"train": 3}
    assert s["workers"] == ["worker-0"] and s["complete"] is True and s["framework"] == "numpy"
    assert s["collections"] == {"weights": 2, "biases": 2, "gradients": 4, "losses": 1}
    assert s["tensors"] == 9 and len(s["tensor_names"]) == 9
    per_step = sum(a.nbytes for a in snaps[0]["params"].values()) * 2 + 4  # params + grads + float32 loss
    assert s["bytes"] == 3 * per_step
    assert s["problems"] == [] and s["events"] == []


def test_ls_text(run):
    d, _ = run
    r = tensortap("ls", d)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "(complete)" in out and "framework  numpy" in out
    assert "steps      3 (0..20)  [train 3]" in out
    assert "workers    1: worker-0" in out and "tensors    9," in out
    assert "gradients (4)" in out


def test_ls_not_a_run_is_a_clear_error(tmp_path):
    r = tensortap("ls", str(tmp_path))
    assert r.returncode == 2 and "is not a tensortap run" in r.stderr and "Traceback" not in r.stderr
    r = tensortap("ls", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_plugins_lists_builtins():
    r = tensortap("plugins")
    assert r.returncode == 0
    assert "tensortap.collections  [built-in, tensortap" in r.stdout and "adapters: numpy" in r.stdout


def test_no_command_prints_help():
    r = tensortap()
    assert r.returncode == 2 and "usage: tensortap" in r.stdout
