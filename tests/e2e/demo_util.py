"""Running an example as a user does: a subprocess from the repository root."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_demo(script: str, out: str, *args: str, timeout: int = 900) -> str:
    """Run examples/<script> --quick --out OUT; returns its stdout (fails with its output tail)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--quick", "--out", out, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def assert_png(path: str) -> None:
    assert os.path.getsize(path) > 2000, path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def assert_gif(path: str) -> None:
    assert os.path.getsize(path) > 2000, path
    with open(path, "rb") as f:
        assert f.read(6) in (b"GIF89a", b"GIF87a"), path
