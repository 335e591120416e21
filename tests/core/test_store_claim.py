"""Issue 16 §4: no run is ever lost to a second writer. A writer claims (out_dir, worker) when the
Hook is created; a second one is refused at once, naming the holder, and nothing is truncated.
A claim left by a writer that died on this machine is taken over (with a warning) when it wrote
nothing; anything else is refused with the way out."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tensortap as tt
from tensortap.store import StoreWriter, layout

# Trains 40 steps of a numpy MLP, flushes, says so, and holds the run open until told to close.
HOLDER = textwrap.dedent("""
    import sys
    import numpy as np
    import tensortap as tt
    from tensortap.testing import NumpyMLP, make_data
    run = sys.argv[1]
    model = NumpyMLP(seed=5)
    hook = tt.Hook(run, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    hook.register(model)
    x, y = make_data(8 * 40, seed=6)
    for s in range(40):
        model.loss(model.forward(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8])
        model.backward()
        model.sgd_step(0.1)
    hook.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    hook.close()
    print("closed", flush=True)
""")


def _expected_fc1(steps: int):
    from tensortap.testing import NumpyMLP, make_data

    model = NumpyMLP(seed=5)
    x, y = make_data(8 * 40, seed=6)
    out = []
    for s in range(steps):
        out.append(model.params["fc1.weight"].copy())
        model.loss(model.forward(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8])
        model.backward()
        model.sgd_step(0.1)
    return out


def _worker_dir(run: str, rank: int = 0) -> str:
    return os.path.join(run, layout.WORKERS_DIR, f"worker-{rank}")


def test_a_second_writer_is_refused_at_creation_and_the_first_run_is_kept(run_url):
    """Before: both were accepted (the check looked for index files that appear at the first write,
    and files were opened truncating): one writer's 40 steps vanished, the run read complete."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, run_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        with pytest.raises(tt.ConfigError) as err:
            tt.Hook(run_url, include_collections=["weights"])
        msg = str(err.value)
        assert f"pid {p.pid}" in msg and repr(socket.gethostname()) in msg and "started 20" in msg, msg
        assert "worker-0" in msg and "new out_dir" in msg, msg
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "closed", p.stderr.read()
    finally:
        p.kill()
        p.wait(timeout=30)
    trial = tt.create_trial(run_url)
    assert trial.steps() == list(range(40)) and trial.is_complete() and trial.problems == []
    for s, w in enumerate(_expected_fc1(40)):
        assert trial.tensor("fc1.weight").value(s).tobytes() == w.tobytes(), s


def test_a_second_hook_in_the_same_process_is_refused(tmp_path):
    run = str(tmp_path / "run")
    first = tt.Hook(run, include_collections=["scalars"])
    with pytest.raises(tt.ConfigError, match=r"another tt.Hook in this process .* close that hook first"):
        tt.Hook(run, include_collections=["scalars"])
    with pytest.raises(tt.ConfigError, match="another tt.Hook in this process"):
        StoreWriter(run, 0)  # the store's own writer too
    other = tt.Hook(run, include_collections=["scalars"], rank=1)  # another worker of the same run: fine
    for h in (first, other):
        h.begin_step()
        h.save_scalar("x", 1.0)
        h.close()
    assert tt.create_trial(run).workers() == ["worker-0", "worker-1"]
    with pytest.raises(tt.ConfigError, match=r"already holds a run for worker-0 \(its writer, pid \d+ .* closed it\)"):
        tt.Hook(run)


def test_the_claim_is_taken_at_creation_with_the_launchers_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["scalars"])
    claim = json.load(open(os.path.join(_worker_dir(run, 3), layout.CLAIM)))
    assert claim["pid"] == os.getpid() and claim["host"] == socket.gethostname() and claim["closed"] is None
    hook.close()
    assert json.load(open(os.path.join(_worker_dir(run, 3), layout.CLAIM)))["closed"] is not None


@pytest.mark.parametrize("env, rank", [
    ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, 1),                          # Lightning's ddp launcher, node 0
    ({"LOCAL_RANK": "1", "NODE_RANK": "2", "LOCAL_WORLD_SIZE": "4"}, 9),  # any node, per-node count known
    ({"LOCAL_RANK": "1", "NODE_RANK": "2"}, 0),                          # not knowable: rank 0 (register corrects it)
    ({"RANK": "5", "LOCAL_RANK": "1"}, 5),                               # torchrun: RANK wins
])
def test_launchers_that_set_only_a_local_rank(tmp_path, monkeypatch, env, rank):
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK",
                "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["scalars"])
    assert os.path.exists(os.path.join(_worker_dir(run, rank), layout.CLAIM))
    hook.close()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant_claim(run: str, **fields) -> str:
    from tensortap.store.liveness import Holder

    wdir = _worker_dir(run)
    os.makedirs(wdir, exist_ok=True)
    h = Holder(token="ab" * 16, pid=fields.pop("pid", _dead_pid()), host=fields.pop("host", socket.gethostname()),
               started=time.time() - 100, heartbeat=fields.pop("heartbeat", time.time() - 100), **fields)
    path = os.path.join(wdir, layout.CLAIM)
    with open(path, "wb") as f:
        f.write(h.to_bytes())
    return path


def test_a_stale_claim_of_a_dead_writer_that_wrote_nothing_is_taken_over(tmp_path, caplog):
    run = str(tmp_path / "run")
    _plant_claim(run)
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        hook = tt.Hook(run, include_collections=["scalars"])
    assert any("no longer holds it" in r.getMessage() and "taking it over" in r.getMessage() for r in caplog.records)
    hook.begin_step()
    hook.save_scalar("x", 2.0)
    hook.close()
    assert float(tt.create_trial(run).tensor("x").value(0)) == 2.0


def test_a_dead_writers_run_is_kept_and_refused_naming_it(tmp_path):
    run = str(tmp_path / "run")
    p = subprocess.Popen([sys.executable, "-c", HOLDER, run], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    wdir = _worker_dir(run)
    before = {n: open(os.path.join(wdir, n), "rb").read() for n in os.listdir(wdir)}
    with pytest.raises(tt.ConfigError, match=rf"already holds a run for worker-0 \(its writer, pid {p.pid} .*"
                                             "stopped without closing it\\)"):
        tt.Hook(run)
    assert {n: open(os.path.join(wdir, n), "rb").read() for n in os.listdir(wdir)} == before
    assert tt.create_trial(run).steps() == list(range(40))


@pytest.mark.parametrize("age", [5.0, 3600.0])
def test_a_claim_from_another_machine_is_refused_with_the_way_out(tmp_path, age):
    """Another machine's writer cannot be checked from here: fresh heartbeat or stale, the claim
    is refused, with the command that takes it over."""
    run = str(tmp_path / "run")
    path = _plant_claim(run, pid=1, host="gpu-node-7", heartbeat=time.time() - age)
    with pytest.raises(tt.ConfigError) as err:
        tt.Hook(run)
    msg = str(err.value)
    assert "pid 1 on host 'gpu-node-7'" in msg and f"rm {path}" in msg, msg
    assert ("heartbeat from host 'gpu-node-7'" in msg) if age < 60 else ("no heartbeat from host" in msg), msg
    os.remove(path)  # what the message says to do
    tt.Hook(run).close()


def test_nothing_is_truncated_even_without_a_claim(tmp_path):
    """A segment file already there (a run from an older tensortap, a stray copy) is never
    replaced: a writer that finds its next segment name taken refuses to write over it."""
    run = str(tmp_path / "run")
    w = StoreWriter(run, 0)
    os.makedirs(_worker_dir(run), exist_ok=True)
    stray = os.path.join(_worker_dir(run), layout.data_file(0))
    with open(stray, "wb") as f:
        f.write(b"precious")
    errors = []
    w.on_error = lambda what, e: errors.append(f"{what}: {e}")
    from tensortap.store import StepBatch, TensorItem

    w.submit(StepBatch(0, "train", 0, [TensorItem("a", "value", ("c",), np.ones(3, np.float32))]))
    w.submit(StepBatch(1, "train", 1, [TensorItem("a", "value", ("c",), np.full(3, 2, np.float32))]))
    w.close()
    assert open(stray, "rb").read() == b"precious"
    assert errors and "File exists" in errors[0], errors
    trial = tt.create_trial(run)
    assert trial.steps() == [1] and list(trial.tensor("a").value(1)) == [2, 2, 2]
