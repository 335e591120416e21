"""The progress bar draws on a terminal only: silent in logs, pipes and notebooks."""
from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

from tensortap.progress import Progress, enabled, progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_on_a_pipe_or_file(monkeypatch):
    monkeypatch.delenv("TENSORTAP_PROGRESS", raising=False)
    s = io.StringIO()
    assert not enabled(s)
    assert list(progress(range(5), "x", stream=s)) == list(range(5))
    with Progress(3, "y", stream=s) as p:
        for _ in range(3):
            p.update()
    assert s.getvalue() == ""


def test_draws_on_a_terminal_and_finishes_the_line(monkeypatch):
    monkeypatch.delenv("TENSORTAP_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    s = FakeTTY()
    with Progress(4, "t-SNE", stream=s) as p:
        for _ in range(4):
            p.update()
    out = s.getvalue()
    assert out.startswith("\rt-SNE [") and "4/4" in out and out.endswith("\n")


def test_environment_forces_it_off_or_on(monkeypatch):
    monkeypatch.setenv("TENSORTAP_PROGRESS", "0")
    assert not enabled(FakeTTY())
    monkeypatch.setenv("TENSORTAP_PROGRESS", "1")
    assert enabled(io.StringIO())


def test_cli_shows_a_bar_in_a_real_terminal_and_nothing_in_a_log(tmp_path):
    """`tensortap vis embedding` under a pseudo-terminal draws a bar on stderr; piped, stderr stays empty."""
    from tests.core.test_vis_runs import embedding_run

    run = embedding_run(str(tmp_path / "run"), steps=2, n=40)
    cmd = [sys.executable, "-m", "tensortap.cli", "vis", "embedding", run, "--out", str(tmp_path / "e.gif"),
           "--opt", "method=pca"]
    env = {k: v for k, v in os.environ.items() if k != "TENSORTAP_PROGRESS"}
    env["TERM"] = "xterm"
    piped = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert piped.returncode == 0 and piped.stderr == ""
    master, slave = pty.openpty()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env, timeout=120)
    os.close(slave)
    data = b""
    try:
        while True:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            data += chunk
    except OSError:  # the pty is drained
        pass
    os.close(master)
    assert proc.returncode == 0 and b"pca latent [" in data and b"2/2" in data
