"""Issue 9, object storage: what only object stores do. The shared checks (write, live tail, read,
rules, `tensortap ls`/`report`) run on S3 through the `run_url` fixture (local and s3://… on one
moto server per session, see tensortap.testing.s3); these tests pin the object-store specifics:
objects become visible when closed, so a step is readable after `hook.flush()` / `close()`, and
without flushes the writer rolls segments every `flush_seconds` so a tailing reader still sees
the run grow."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("s3fs", reason="needs s3fs for s3:// runs")

import fsspec  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.testing import NumpyMLP, make_data  # noqa: E402


def _train(hook, model, steps, pause=0.0, start=0):
    """Train `steps` steps; return the params each step's forward used, keyed by global step."""
    x, y = make_data(8 * (start + steps))
    snaps = {}
    for s in range(start, start + steps):
        snaps[s] = {k: v.copy() for k, v in model.params.items()}
        model.loss(model.forward(x[s * 8:(s + 1) * 8]), y[s * 8:(s + 1) * 8])
        model.backward()
        model.sgd_step(0.1)
        time.sleep(pause)
    return snaps


def _objects(url, pattern):
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[-1] for p in fs.glob(f"{path}/workers/worker-0/{pattern}"))


def test_steps_become_visible_on_flush_and_on_close(tt_s3):
    url = tt_s3.new_url("visibility")
    model = NumpyMLP()
    hook = tt.Hook(url, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1),
                   flush_seconds=600)
    hook.register(model)
    snaps = _train(hook, model, 3)
    trial = tt.create_trial(url, wait_seconds=30)
    time.sleep(0.3)  # the writer thread has had time to write the queued steps into the open objects
    trial.refresh()
    assert trial.steps() == [], "an object still open for writing must not be visible (or partly read)"
    assert hook.flush(timeout=60)
    trial.refresh()
    assert trial.steps() == [0, 1, 2] and not trial.is_complete()
    assert _objects(url, "data-*.ttd") == ["data-000000.ttd"]
    snaps.update(_train(hook, model, 2, start=3))
    hook.close()
    trial.refresh()
    assert trial.steps() == [0, 1, 2, 3, 4] and trial.is_complete()
    assert _objects(url, "data-*.ttd") == ["data-000000.ttd", "data-000001.ttd"]  # flush started a new one
    for s, params in snaps.items():
        for k in ("fc1.weight", "fc2.weight"):
            assert trial.tensor(k).value(s).tobytes() == params[k].tobytes(), (k, s)


def test_tailing_reader_sees_steps_without_flushes_as_segments_roll(tt_s3):
    """No hook.flush() in the loop: the writer closes its segment every flush_seconds, and a reader
    in another thread sees the early steps while the run is still being written."""
    url = tt_s3.new_url("roll")
    model = NumpyMLP()
    hook = tt.Hook(url, include_collections=["weights", "biases", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=2), flush_seconds=0.3)
    hook.register(model)
    hook.register_loss(model)
    tail = {}

    def follow():
        trial = tt.create_trial(url, wait_seconds=30)
        tail["ok"] = trial.wait_for_steps([0, 2, 4], timeout=60)
        tail["complete_then"] = trial.is_complete()
        tail["w4"] = trial.tensor("fc1.weight").value(4).copy()

    reader = threading.Thread(target=follow)
    reader.start()
    snaps = _train(hook, model, 24, pause=0.1)
    reader.join(timeout=120)
    hook.close()
    assert tail.get("ok") and tail["complete_then"] is False, tail
    assert np.array_equal(tail["w4"], snaps[4]["fc1.weight"])
    assert len(_objects(url, "data-*.ttd")) >= 3, "segments rolled while training ran"
    trial = tt.create_trial(url)
    assert trial.is_complete() and trial.steps() == list(range(0, 24, 2))
    for s in trial.steps():
        for k, v in snaps[s].items():
            assert trial.tensor(k).value(s).tobytes() == v.tobytes()


def test_live_stop_training_on_s3_fires_at_the_step_and_stops_training(tt_s3):
    """The stop action on S3 (tests/core/test_rules_live.py checks it locally, where training stops
    within 30 steps of ~12 ms). It fires at the NaN's step and training stops at a step boundary,
    ~1-3 s after the step: each step the rules see costs a flush (2 PUTs), a LIST and GETs."""
    url = tt_s3.new_url("stop")
    model = NumpyMLP()
    hook = tt.Hook(url, include_collections=["weights", "losses"], save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(tt.rules.get("exploding_tensor")(), action="stop_training")
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(256, seed=1)
    started = {}
    with pytest.raises(tt.StopTraining, match="exploding_tensor fired at step 10"):
        for i in range(1000):
            if i == 10:
                model.params["fc1.weight"][0, 0] = np.nan
            started[i] = time.monotonic()
            model.train_step(x[:32], y[:32], lr=0.1)
            time.sleep(0.1)  # close() evaluates every step saved before the stop: keep them few
    stopped_at, latency = hook.step, time.monotonic() - started[10]
    hook.close()
    assert 10 < stopped_at < 1000 and latency < 30, (stopped_at, latency)
    trial = tt.create_trial(url)
    fired = [r for r in trial.rule_results() if r["fired"]]
    assert fired and fired[0]["step"] == 10
    assert any(e["event"] == "stop_requested" for e in trial.events())


def _claim_object(url):
    fs, path = fsspec.core.url_to_fs(url)
    return fs, f"{path}/workers/worker-0/writer.json"


def test_a_claim_taken_over_before_the_first_flush_stops_the_writer_on_s3(tt_s3):
    """No locks on S3: the claim object is read back before the first segment is written. A writer
    that finds another's claim there (one that raced it) writes nothing and says so; its run's
    objects are the other's to write."""
    import json

    url = tt_s3.new_url("claim-race")
    hook = tt.Hook(url, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    fs, claim = _claim_object(url)
    other = dict(json.loads(fs.cat_file(claim)), token="cd" * 16, pid=4242, host="gpu-node-7", heartbeat=time.time())
    fs.pipe_file(claim, json.dumps(other).encode())  # the racing writer's claim replaces ours
    model = NumpyMLP()
    hook.register(model)
    _train(hook, model, 3)
    hook.close()
    assert any("no longer this writer's" in e and "gpu-node-7" in e for e in hook.errors), hook.errors
    assert _objects(url, "*.tt?") == []  # nothing of this writer's run reached the bucket
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(claim))["token"] == "cd" * 16  # and the other's claim is left as it is


def test_segment_objects_are_never_overwritten_on_s3(tt_s3):
    """Segments are created with If-None-Match (s3fs mode "xb"): an object already at a segment's
    name stays as it is; the writer reports it (the steps of that segment are lost, its index is
    not published) and goes on in the next segment."""
    url = tt_s3.new_url("no-overwrite")
    hook = tt.Hook(url, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    fs, claim = _claim_object(url)
    stray = claim.rsplit("/", 1)[0] + "/data-000000.ttd"
    fs.pipe_file(stray, b"precious")
    model = NumpyMLP()
    hook.register(model)
    snaps = _train(hook, model, 1)
    hook.flush()  # segment 0: its data object exists already
    snaps.update(_train(hook, model, 2, start=1))
    hook.close()
    fs.invalidate_cache()
    assert fs.cat_file(stray) == b"precious"
    assert any("data-000000.ttd exists already and is never overwritten" in e for e in hook.errors), hook.errors
    assert _objects(url, "index-*.tti") == ["index-000001.tti"]  # segment 0's index was not published
    trial = tt.create_trial(url)
    assert trial.steps() == [1, 2]
    assert trial.tensor("fc1.weight").value(2).tobytes() == snaps[2]["fc1.weight"].tobytes()
