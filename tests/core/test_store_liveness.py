"""Issue 16 §8: live readers notice a dead writer. The writer keeps a heartbeat in its claim file;
`trial.writer_status()` tells complete / alive / dead / unknown; `wait_for_steps(timeout=None)` and
`tensortap rules run --follow` stop with an error naming the last step written (exit 2), and
timeouts hold while catching up.

Before: after the writer was SIGKILLed both waited forever; `--timeout 8` returned after 27 s."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import tensortap as tt
from tensortap.store import layout
from test_store_hostile import within
from tt_store_helpers import train_mlp

# Saves a step every 20 ms and says which step is on disk; runs until killed (or told to close).
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import tensortap as tt
    hook = tt.Hook(sys.argv[1], include_collections=["scalars"])
    stop_after = int(sys.argv[2])
    for s in range(10 ** 6):
        hook.begin_step()
        hook.save_scalar("s", float(s))
        hook.save_tensor("w", np.full((8, 8), s + 1, np.float32), collections=["weights"])
        hook.flush()
        print(s, flush=True)
        if s == stop_after:
            break
        time.sleep(0.02)
    hook.close()
    print("closed", flush=True)
""")


def _start(run: str, stop_after: int = 10 ** 9):
    return subprocess.Popen([sys.executable, "-c", WRITER, run, str(stop_after)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_after(p, steps: int) -> int:
    for line in p.stdout:
        if int(line) >= steps:
            break
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    return p.pid


def test_writer_status_alive_then_dead(run_url):
    p = _start(run_url)
    try:
        assert int(p.stdout.readline()) == 0
        trial = tt.create_trial(run_url, wait_seconds=30)
        st = trial.writer_status()
        assert st.state == "alive" and not st.complete, st
        w = st.workers[0]
        assert (w.worker, w.pid, w.host) == ("worker-0", p.pid, socket.gethostname())
        assert w.heartbeat is not None and time.time() - w.heartbeat < 60 and w.started <= w.heartbeat
    finally:
        _kill_after(p, 3)
    trial.refresh()
    st = trial.writer_status()
    assert st.state == "dead" and f"pid {p.pid} on this machine is gone" in st.detail, st
    assert st.last_step == trial.steps()[-1] >= 3


def test_writer_status_complete(tmp_path):
    run = str(tmp_path / "run")
    train_mlp(run, steps=3, save_interval=1)
    st = tt.create_trial(run).writer_status()
    assert st.state == "complete" and st.complete and st.last_step == 2 and st.workers[0].pid == os.getpid()


def _claim_from(run: str, host: str, heartbeat):
    """Make the run's claim say it was written on another machine."""
    path = os.path.join(run, layout.WORKERS_DIR, "worker-0", layout.CLAIM)
    c = json.load(open(path))
    c.update(host=host, heartbeat=heartbeat, closed=None, pid=4242)
    with open(path, "w") as f:
        json.dump(c, f)


@pytest.mark.parametrize("age,state", [(5, "alive"), (59, "alive"), (61, "dead"), (None, "unknown")])
def test_a_writer_on_another_machine_is_judged_by_its_heartbeat(tmp_path, age, state):
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["scalars"])
    hook.begin_step()
    hook.save_scalar("x", 1.0)
    hook.flush()
    _claim_from(run, "gpu-node-7", None if age is None else time.time() - age)
    st = tt.create_trial(run).writer_status()
    assert st.state == state, st
    if state == "dead":
        assert "no heartbeat from host 'gpu-node-7' for 61 s (limit 60 s)" in st.detail, st.detail
    hook.close()


def test_the_heartbeat_is_refreshed_with_the_last_step(tmp_path, monkeypatch):
    from tensortap.store import claim as claim_mod

    monkeypatch.setattr(claim_mod, "HEARTBEAT_SECONDS", 0.05)
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["scalars"])
    path = os.path.join(run, layout.WORKERS_DIR, "worker-0", layout.CLAIM)
    hook.begin_step()
    hook.save_scalar("x", 1.0)
    hook.begin_step()
    hook.save_scalar("x", 2.0)
    hook.flush()
    first = json.load(open(path))["heartbeat"]
    deadline = time.time() + 10
    while time.time() < deadline:
        c = json.load(open(path))
        if c["heartbeat"] > first and c["last_step"] == 1:
            break
        time.sleep(0.05)
    assert c["heartbeat"] > first and c["last_step"] == 1, c
    hook.close()
    assert json.load(open(path))["closed"] is not None


def test_wait_for_steps_without_timeout_stops_when_the_writer_dies(run_url):
    p = _start(run_url)
    pid = _kill_after(p, 5)
    trial = tt.create_trial(run_url)
    last = trial.steps()[-1]
    with within(3.0) as took:
        with pytest.raises(tt.WriterGoneError) as err:
            trial.wait_for_steps([last + 1000], timeout=None)
    assert took[0] < 10
    msg = str(err.value)
    assert f"the last step written is {last}" in msg and f"pid {pid}" in msg, msg
    assert trial.wait_for_steps([last]) is True  # what was written still reads
    assert float(trial.tensor("s").value(last)) == last


def _tensortap(*args, timeout=120):
    cmd = [sys.executable, "-c", "import sys; from tensortap.cli import main; sys.exit(main())"]
    t0 = time.monotonic()
    r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def test_rules_run_follow_exits_2_when_the_writer_dies(run_url):
    p = _start(run_url)
    _kill_after(p, 5)
    last = tt.create_trial(run_url).steps()[-1]
    r, took = _tensortap("rules", "run", run_url, "--rule", "all_zero", "--follow", "--all")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"the last step written is {last}" in r.stderr and "stopped without closing the run" in r.stderr, r.stderr
    assert f"step {last}:" in r.stdout  # every written step was evaluated first


def test_rules_run_follow_ends_0_when_the_run_closes(tmp_path):
    run = str(tmp_path / "run")
    p = _start(run, stop_after=30)
    assert int(p.stdout.readline()) == 0
    r, _ = _tensortap("rules", "run", run, "--rule", "all_zero", "--follow")
    assert r.returncode == 0, (r.stdout, r.stderr)
    p.wait(timeout=60)


class Slow(tt.rules.Rule):
    name = "test_slow_rule"

    def invoke_at_step(self, trial, step):
        time.sleep(0.1)
        return False


def test_the_timeout_holds_while_catching_up(tmp_path):
    """40 steps to catch up at 0.1 s each, timeout 1 s: it returns after ~1 s, not 4 s."""
    run = str(tmp_path / "run")
    p = _start(run)
    try:
        for line in p.stdout:
            if int(line) >= 40:
                break
        trial = tt.create_trial(run)
        t0 = time.monotonic()
        results = tt.invoke_rule(Slow(), trial, follow=True, timeout=1.0, poll=0.1)
        took = time.monotonic() - t0
    finally:
        p.kill()
        p.wait(timeout=30)
    assert took < 2.0 and 5 <= len(results) <= 15, (took, len(results))
