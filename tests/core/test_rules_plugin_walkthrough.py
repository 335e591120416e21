"""docs/writing-a-rule-plugin.md works as written: its files, built and installed into a temp
dir by pip, give a rule that `tensortap rules list` shows and `tensortap rules run` runs."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tensortap as tt
from tensortap.testing import NumpyMLP, make_data

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-rule-plugin.md"


def doc_files():
    text = DOC.read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))


def test_walkthrough_is_under_30_lines_of_code():
    files = doc_files()
    assert set(files) == {"big-weights/big_weights.py", "big-weights/pyproject.toml"}
    code = [ln for body in files.values() for ln in body.splitlines() if ln.strip()]
    assert len(code) < 30, len(code)


def test_walkthrough_builds_installs_and_runs(tmp_path):
    pytest.importorskip("hatchling", reason="the walkthrough builds with hatchling")
    for rel, body in doc_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(tmp_path / "big-weights")],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))

    def tensortap(*args):
        return subprocess.run([sys.executable, "-m", "tensortap.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    out = tensortap("rules", "list")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^big_weights  \[big-weights\]$", out.stdout, flags=re.M), out.stdout
    assert "threshold=10.0" in out.stdout
    # a run whose weights hold a 50: the rule fires (exit 1); with a higher threshold it does not (0)
    run = str(tmp_path / "run")
    model = NumpyMLP()
    model.params["fc1.weight"][0, 0] = 50.0
    hook = tt.Hook(run, save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    x, y = make_data(64)
    for _ in range(3):
        model.train_step(x, y)
    hook.close()
    fired = tensortap("rules", "run", run, "--rule", "big_weights")
    assert fired.returncode == 1, fired.stderr
    assert "FIRED step 0: weights above 10: {'fc1.weight': 50.0}" in fired.stdout
    assert tensortap("rules", "run", run, "--rule", "big_weights", "--param", "threshold=100").returncode == 0
