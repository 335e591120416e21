"""Crash safety and live reading across processes: a writer killed with SIGKILL mid-run, a reader
in a second process following a run as it is written, a reader tailing a writer that dies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tensortap as tt
from tensortap.testing import NumpyMLP, make_data

HERE = os.path.dirname(os.path.abspath(__file__))

# A child that trains a (bigger) numpy MLP, saving every step, and prints each step number once
# the writer has it on disk. Deterministic by seed, so the parent can recompute every value.
WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import tensortap as tt
    from tensortap.testing import NumpyMLP, make_data
    run, steps, hidden, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    model = NumpyMLP(n_in=64, n_hidden=hidden, n_out=4, seed=7)
    hook = tt.Hook(run, include_collections=["weights", "biases", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(8 * steps, n_in=64, seed=8)
    for s in range(steps):
        model.loss(model.forward(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8])
        model.backward()
        model.sgd_step(0.05)
        hook.flush()  # hands step s to the writer and waits until it is written
        print(s, flush=True)
        time.sleep(pause)
    hook.close()
    print("closed", flush=True)
""")


def expected_params(steps: int, hidden: int, total_steps: int):
    """What the child's model held at each of its first `steps` steps (recomputed here, no tensortap)."""
    model = NumpyMLP(n_in=64, n_hidden=hidden, n_out=4, seed=7)
    x, y = make_data(8 * total_steps, n_in=64, seed=8)
    out = []
    for s in range(steps):
        params = {k: v.copy() for k, v in model.params.items()}
        model.loss(model.forward(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8])
        model.backward()
        out.append((params, {k: v.copy() for k, v in model.grads.items()}))
        model.sgd_step(0.05)
    return out


def start_writer(run, steps, hidden=256, pause=0.0):
    return subprocess.Popen([sys.executable, "-c", WRITER, run, str(steps), str(hidden), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_run_keeps_every_completed_step(run_url):
    steps, hidden = 400, 256
    p = start_writer(run_url, steps, hidden)
    done = []
    for line in p.stdout:  # kill while it is writing, after a handful of completed steps
        done.append(int(line))
        if len(done) == 12:
            p.send_signal(signal.SIGKILL)
            break
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    trial = tt.create_trial(run_url)
    saved = trial.steps()
    assert not trial.is_complete()
    assert set(done) <= set(saved), "a step the writer reported done is missing"
    assert saved == list(range(len(saved))), "nothing lost before the last completed step"
    want = expected_params(len(saved), hidden, steps)
    for s in saved:
        params, grads = want[s]
        for k in params:
            assert trial.tensor(k).value(s).tobytes() == params[k].tobytes(), (k, s)
            assert trial.tensor(f"gradients/{k}").value(s).tobytes() == grads[k].tobytes(), (k, s)


READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensortap as tt
    run, n = sys.argv[1], int(sys.argv[2])
    print("ready", flush=True)  # the writer starts only now: a loaded machine may start us slowly
    trial = tt.create_trial(run, wait_seconds=60)
    seen_live = []
    while True:
        trial.refresh()
        have = trial.steps()
        if not trial.is_complete():
            seen_live.append(len(have))
        if len(have) >= n:
            break
        if not trial.wait_for_steps([len(have)], timeout=30):
            break
    ok = trial.wait_for_steps(range(n), timeout=30)
    sums = {s: float(np.asarray(trial.tensor("fc1.weight").value(s), np.float64).sum()) for s in trial.steps()}
    print(json.dumps({"ok": ok, "seen_live": seen_live, "sums": sums}))
""")


def test_reader_in_second_process_follows_a_live_run(run_url):
    n = 25
    reader = subprocess.Popen([sys.executable, "-c", READER, run_url, str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
    model = NumpyMLP(seed=3)
    hook = tt.Hook(run_url, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    x, y = make_data(8 * n)
    sums = {}
    for s in range(n):
        sums[s] = float(model.params["fc1.weight"].astype(np.float64).sum())
        model.loss(model.forward(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8])
        model.backward()
        model.sgd_step(0.1)
        hook.flush()
        time.sleep(0.1)
    hook.close()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    res = json.loads(out)
    assert res["ok"]
    assert {int(k): v for k, v in res["sums"].items()} == sums
    # it saw the run grow while it was still being written
    live = res["seen_live"]
    assert len(set(live)) >= 3 and any(0 < k < n for k in live), live


class CountSteps(tt.rules.Rule):
    name = "test_count_steps"

    def invoke_at_step(self, trial, step):
        return bool(trial.tensor("fc1.weight").value(step).size), f"step {step}"


def test_tailing_reader_ends_cleanly_when_the_writer_dies(run_url):
    p = start_writer(run_url, 10_000, hidden=32, pause=0.01)
    for line in p.stdout:
        if int(line) >= 5:
            break
    trial = tt.create_trial(run_url)
    time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    t0 = time.monotonic()
    with pytest.raises(tt.WriterGoneError, match="the last step written is"):  # it was False before: silent
        trial.wait_for_steps(range(100_000), timeout=1.5)
    results = tt.invoke_rule(CountSteps(), trial, follow=True, timeout=1.5, poll=0.1)
    assert time.monotonic() - t0 < 20
    saved = trial.steps()
    assert len(saved) >= 6 and saved == list(range(len(saved)))
    assert [r.step for r in results] == saved and all(r.fired for r in results)
    assert not trial.is_complete()
