"""`tensortap serve` without a browser: what the server answers (and refuses), the run states,
the data behind each panel checked against values read straight from the trial, read-only."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import numpy as np
import pytest

import tensortap as tt
from tensortap.errors import ConfigError
from tensortap.serve import Server, run_state
from tensortap.serve import rulelog, series
from tensortap.store import StepBatch, StoreWriter, TensorItem, layout
from tests.core.test_vis_runs import gradcam_run, mlp_run, pruning_run
from tests.core.tt_serve_helpers import ROOT, Writer, get, get_json, run_ids


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve-runs")
    mlp_run(str(d / "mlp"), steps=12)
    pruning_run(str(d / "prune-a"), iterations=4)
    pruning_run(str(d / "group" / "prune-b"), iterations=5)
    gradcam_run(str(d / "cam"))
    return str(d)


@pytest.fixture(scope="module")
def server(runs):
    with Server(runs) as s:
        run_ids(s.url)
        yield s


def _files(path: str) -> dict:
    out = {}
    for d, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


# ---- finding and describing runs --------------------------------------------------------------
def test_a_folder_of_runs_is_listed_with_state_steps_workers_size_and_rules(server, runs):
    d = get_json(server.url + "api/runs")
    by = {r["name"]: r for r in d["runs"]}
    assert set(by) == {"mlp", "prune-a", "group/prune-b", "cam"}
    mlp = tt.create_trial(os.path.join(runs, "mlp"))
    r = by["mlp"]
    assert r["state"] == "complete" and r["steps"] == len(mlp.steps()) and r["workers"] == ["worker-0"]
    assert r["bytes"] == mlp.total_bytes() and r["tensors"] == len(mlp.tensor_names())
    fired = sum(1 for x in mlp.rule_results() if x["fired"])
    assert fired and r["rules"]["fired"] == fired and r["rules"]["fired_rules"] == ["test_loss_above"]
    assert r["rules"]["quiet"] + r["rules"]["fired"] + r["rules"]["skipped"] == len(mlp.rule_results())


def test_one_run_is_served_on_its_own(runs):
    with Server(os.path.join(runs, "mlp")) as s:
        assert list(run_ids(s.url)) == ["mlp"]


def test_new_runs_appear_and_deleted_ones_go(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    with Server(str(root), scan_every=0.2) as s:
        assert get_json(s.url + "api/runs")["runs"] == []
        mlp_run(str(root / "late"), steps=3)
        t0 = time.monotonic()
        while not get_json(s.url + "api/runs")["runs"]:
            assert time.monotonic() - t0 < 5, "a new run did not appear"
            time.sleep(0.05)
        import shutil

        shutil.rmtree(root / "late")
        t0 = time.monotonic()
        while get_json(s.url + "api/runs")["runs"]:
            assert time.monotonic() - t0 < 5, "a deleted run stayed"
            time.sleep(0.05)


# ---- states --------------------------------------------------------------------------------------
def test_run_states_complete_live_gone_and_interrupted(tmp_path):
    done = tt.create_trial(mlp_run(str(tmp_path / "done"), steps=2))
    assert run_state(done).state == "complete"
    w = Writer(str(tmp_path / "live"))
    try:
        w.advance(3)
        live = tt.create_trial(str(tmp_path / "live"))
        st = run_state(live)
        assert st.state == "live" and f"pid {w.proc.pid}" in st.detail
        w.kill()  # SIGKILL: no close, no end record
        live.refresh()
        st = run_state(live)
        assert st.state == "writer gone" and "without closing" in st.detail and "last step 2" in st.detail
    finally:
        w.kill()


def test_a_run_from_elsewhere_without_heartbeats_is_interrupted_once_quiet(tmp_path):
    # a run from a tensortap without claims or heartbeats, written on another host: nothing can
    # judge its writer from here (the claim file removed, meta.json naming another host)
    w = Writer(str(tmp_path / "far"))
    try:
        w.advance(3)
    finally:
        w.kill()
    wdir = os.path.join(str(tmp_path / "far"), layout.WORKERS_DIR, "worker-0")
    os.remove(os.path.join(wdir, layout.CLAIM))
    with open(os.path.join(wdir, layout.META)) as f:
        meta = json.load(f)
    meta["hostname"] = "elsewhere.example"
    with open(os.path.join(wdir, layout.META), "w") as f:
        json.dump(meta, f)
    far = tt.create_trial(str(tmp_path / "far"))
    assert far.writer_status().state == "unknown"
    last = far.step_time(far.last_step())
    assert run_state(far, now=last + 10).state == "live"
    st = run_state(far, now=last + 3600)
    assert st.state == "interrupted" and "elsewhere.example" in st.detail


def test_a_heartbeat_from_elsewhere_decides(tmp_path):
    w = Writer(str(tmp_path / "r"))
    try:
        w.advance(2)
        claim = os.path.join(str(tmp_path / "r"), layout.WORKERS_DIR, "worker-0", layout.CLAIM)
        w.kill()
        with open(claim) as f:
            holder = json.load(f)
        holder["host"], holder["heartbeat"] = "elsewhere.example", time.time()  # fresh: alive over there
        with open(claim, "w") as f:
            json.dump(holder, f)
        assert run_state(tt.create_trial(str(tmp_path / "r"))).state == "live"
        holder["heartbeat"] = time.time() - 3600  # an hour old: gone
        with open(claim, "w") as f:
            json.dump(holder, f)
        st = run_state(tt.create_trial(str(tmp_path / "r")))
        assert st.state == "writer gone" and "elsewhere.example" in st.detail
    finally:
        w.kill()


# ---- the data behind the panels ----------------------------------------------------------------------
def test_scalars_match_the_trial_and_mark_fired_steps(server, runs):
    rid = run_ids(server.url)["mlp"]
    d = get_json(server.url + f"api/scalars?run={rid}")
    t = tt.create_trial(os.path.join(runs, "mlp"))
    loss = d["series"]["loss"]
    for mode in ("train", "eval"):
        steps = [s for s in t.tensor("loss").steps() if t.mode(s).value == mode]
        assert loss[mode]["x"] == steps
        assert np.allclose(loss[mode]["y"], [float(t.tensor("loss").value(s)) for s in steps])
    fired = sorted(r["step"] for r in t.rule_results() if r["fired"])
    assert [m["step"] for m in d["markers"]] == fired and all(m["rule"] == "test_loss_above" for m in d["markers"])
    # a range: only those steps
    d2 = get_json(server.url + f"api/scalars?run={rid}&lo=4&hi=8")
    assert all(4 <= x <= 8 for m in d2["series"]["loss"].values() for x in m["x"])
    assert all(4 <= m["step"] <= 8 for m in d2["markers"])


def test_downsampling_keeps_a_one_step_spike():
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, 0.01, 10_000)
    y[7_321] = 50.0
    y[2_000] = -40.0
    idx = series.minmax_indices(y, 600)
    assert len(idx) <= 600 and idx[0] == 0 and idx[-1] == len(y) - 1
    assert 7_321 in idx and 2_000 in idx
    assert y[idx].max() == y.max() and y[idx].min() == y.min()
    assert np.all(np.diff(idx) > 0)


def test_series_are_read_incrementally(tmp_path, monkeypatch):
    calls = []
    real = series._point
    monkeypatch.setattr(series, "_point", lambda t, s: calls.append(s) or real(t, s))
    w = StoreWriter(str(tmp_path / "r"), 0)
    for s in range(50):
        w.submit(StepBatch(s, "train", s, [TensorItem("loss", "value", ("losses",), np.float32(1.0 / (s + 1)))]))
    w.flush()
    trial = tt.create_trial(str(tmp_path / "r"))
    cache = series.SeriesCache()
    got = cache.get(trial, "loss")
    assert len(calls) == 50 and np.allclose(got.values, [1.0 / (s + 1) for s in range(50)])
    for s in range(50, 80):
        w.submit(StepBatch(s, "train", s, [TensorItem("loss", "value", ("losses",), np.float32(1.0 / (s + 1)))]))
    w.close()
    trial.refresh()
    got = cache.get(trial, "loss")
    assert len(calls) == 80, "steps read before were read again"
    assert got.steps.tolist() == list(range(80)) and np.allclose(got.values, [1.0 / (s + 1) for s in range(80)])


def test_rule_timeline_keeps_fired_quiet_and_skipped_apart():
    recs = ([{"rule": "r", "step": s, "fired": False, "skipped": True, "message": "no data"} for s in range(0, 10)]
            + [{"rule": "r", "step": s, "fired": s in (13, 17), "message": f"m{s}"} for s in range(10, 20)]
            + [{"rule": "bad", "step": "x", "fired": True}])  # malformed: left out
    logs = rulelog.build(recs)
    assert set(logs) == {"r"}
    assert logs["r"].counts() == {"quiet": 8, "fired": 2, "skipped": 10}
    b = logs["r"].buckets(0, 19, 4)  # 4 buckets of 5 steps
    assert b == [[0, 4, 0, 0, 5], [5, 9, 0, 0, 5], [10, 14, 4, 1, 0], [15, 19, 4, 1, 0]]
    assert [r["step"] for r in logs["r"].of(rulelog.FIRED)] == [13, 17]
    per_step = logs["r"].buckets(10, 19, 100)
    assert [x[0] for x in per_step] == list(range(10, 20)) and per_step[3] == [13, 13, 0, 1, 0]
    # the count of tensors checked and a skip's reason, where a result records them apart
    more = rulelog.build([{"rule": "q", "step": 1, "fired": False, "checked": 12, "message": "fine"},
                          {"rule": "q", "step": 2, "fired": False, "skipped": True, "checked": 0, "message": "",
                           "reason": "no saved tensor is a ReLU output"}])["q"]
    assert [(r["outcome"], r["checked"], r["message"]) for r in more.results(None, None, 10)] == [
        ("quiet", 12, "fine"), ("skipped", 0, "no saved tensor is a ReLU output")]


def test_rule_results_are_read_incrementally_and_match_a_full_read(tmp_path):
    w = Writer(str(tmp_path / "live"))
    try:
        w.advance(3)
        trial = tt.create_trial(w.run_dir)
        logs = rulelog.RuleLogs()
        logs.update(trial)
        got, cursor = trial.rule_results_since(None)
        assert got == trial.rule_results() and len(got) == 3
        for target, low in ((6, False), (9, True), (12, False)):
            w.advance(target, low=low)
            trial.refresh()
            new, cursor2 = trial.rule_results_since(cursor)
            assert new == trial.rule_results()[len(trial.rule_results()) - len(new):] and len(new) == 3
            cursor = cursor2
            logs.update(trial)
    finally:
        w.kill()
    full = rulelog.build(trial.rule_results())["accuracy_floor"]
    inc = logs.logs["accuracy_floor"]
    assert inc.steps.tolist() == full.steps.tolist() == list(range(12))
    assert inc.outcomes.tolist() == full.outcomes.tolist() and inc.messages == full.messages
    assert inc.counts() == {"quiet": 9, "fired": 3, "skipped": 0}


def test_rules_endpoint_and_bucket_messages(server, runs):
    rid = run_ids(server.url)["mlp"]
    d = get_json(server.url + f"api/rules?run={rid}")
    t = tt.create_trial(os.path.join(runs, "mlp"))
    rr = t.rule_results()
    (r,) = d["rules"]
    assert r["name"] == "test_loss_above" and r["counts"]["fired"] == sum(x["fired"] for x in rr)
    first = min(x["step"] for x in rr if x["fired"])
    m = get_json(server.url + f"api/rule?run={rid}&rule=%22test_loss_above%22&lo={first}&hi={first}")
    assert m["results"][0]["outcome"] == "fired" and m["results"][0]["message"].startswith("loss ")


def test_distribution_histograms_match_numpy(server, runs):
    rid = run_ids(server.url)["mlp"]
    d = get_json(server.url + f"api/dist?run={rid}&name=%22fc1.weight%22&bins=16&cols=400")
    t = tt.create_trial(os.path.join(runs, "mlp"))
    steps = t.tensor("fc1.weight").steps()
    assert d["steps"] == steps and d["shown"] == d["in_range"] == len(steps)
    edges = np.asarray(d["edges"])
    for j, s in enumerate(steps):
        ref = np.histogram(t.tensor("fc1.weight").value(s), bins=edges)[0]
        assert np.array_equal(np.asarray(d["counts"][j]), ref), s


def test_tensor_step_summary_matches_numpy(server, runs):
    rid = run_ids(server.url)["mlp"]
    t = tt.create_trial(os.path.join(runs, "mlp"))
    s = t.tensor("gradients/fc2.weight").steps()[3]
    v = t.tensor("gradients/fc2.weight").value(s).astype(np.float64)
    d = get_json(server.url + f"api/tensor_step?run={rid}&name=%22gradients/fc2.weight%22&step={s}")["value"]
    assert d["shape"] == list(v.shape) and d["dtype"] == "float32"
    assert np.isclose(d["min"], v.min()) and np.isclose(d["max"], v.max())
    assert np.isclose(d["mean"], v.mean()) and np.isclose(d["std"], v.std())
    assert sum(d["histogram"]["counts"]) == v.size


def test_gradcam_panel_carries_maps_labels_and_both_scales(server, runs):
    rid = run_ids(server.url)["cam"]
    d = get_json(server.url + f"api/gradcam?run={rid}")
    t = tt.create_trial(os.path.join(runs, "cam"))
    cams = [t.tensor("gradcam/layer4/cam").value(s) for s in t.tensor("gradcam/layer4/cam").steps()]
    assert d["layer"] == "layer4" and d["step"] == 2
    assert np.isclose(d["shared_max"], max(float(c.max()) for c in cams))
    im = d["images"][0]
    cam = np.asarray(im["cam"]["values"]).reshape(im["cam"]["h"], im["cam"]["w"])
    assert np.allclose(cam, cams[-1][0], atol=1e-5)
    assert im["pred"] == 0 and abs(im["score"] - 0.5) < 1e-6 and im["true"] is None


def test_compare_overlays_and_scalar_against_scalar(server, runs):
    ids = run_ids(server.url)
    pair = [ids["prune-a"], ids["group/prune-b"]]
    runs_q = quote(json.dumps(pair))
    d = get_json(server.url + "api/compare?runs=" + runs_q + "&names=%5B%22pruning/accuracy%22%5D")
    assert set(d["series"]["pruning/accuracy"]) == set(pair)
    xy = get_json(server.url + "api/xy?runs=" + runs_q + "&x=%22pruning/params%22&y=%22pruning/accuracy%22")
    for r, path in zip(xy["runs"], ("prune-a", "group/prune-b")):
        t = tt.create_trial(os.path.join(runs, path))
        steps = t.tensor("pruning/params").steps()
        assert r["steps"] == steps
        assert r["x"] == [float(t.tensor("pruning/params").value(s)) for s in steps]
        assert np.allclose(r["y"], [float(t.tensor("pruning/accuracy").value(s)) for s in steps])
    assert len(xy["runs"][1]["x"]) == 5 and len(xy["runs"][0]["x"]) == 4


# ---- safe ----------------------------------------------------------------------------------------
def test_read_only_and_no_error_pages(server, runs):
    before = _files(runs)
    rid = run_ids(server.url)["mlp"]
    for path in ("", "static/app.js", "static/plot.js", "static/app.css", "favicon.ico", f"api/run?run={rid}",
                 f"api/scalars?run={rid}", f"api/rules?run={rid}", f"api/events?run={rid}",
                 f"api/tensor?run={rid}&name=%22loss%22", f"api/tensor_step?run={rid}&name=%22loss%22&step=0",
                 f"api/dist?run={rid}&name=%22nope%22", f"api/tensor?run={rid}&name=not-json",
                 f"api/scalars?run={rid}&lo=abc", "api/run?run=ffffffffffff", "nothing/here", "api/gradcam?run=" + rid,
                 "api/attention?run=" + rid):
        status, headers, body = get(server.url + path)
        assert status < 500, (path, status)
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        if path.startswith("api/"):
            json.loads(body)  # always JSON, errors too
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _, body = get(server.url + "api/runs", method=method)
        assert status == 405 and b"read-only" in body
    assert _files(runs) == before, "serving wrote to a run"


def test_errors_are_clear_messages_not_tracebacks(server):
    rid = run_ids(server.url)["mlp"]
    d = get_json(server.url + f"api/tensor?run={rid}&name=%22nope%22")
    assert d == {"error": "no tensor named 'nope' in this run"}
    status, _, body = get(server.url + f"api/scalars?run={rid}&lo=abc")
    assert status == 400 and json.loads(body)["error"] == "lo must be an integer, got 'abc'"
    status, _, body = get(server.url + "api/run?run=ffffffffffff")
    assert status == 404 and "no such run" in json.loads(body)["error"]


def test_a_bad_run_shows_its_problem(tmp_path):
    root = tmp_path / "runs"
    mlp_run(str(root / "good"), steps=2)
    future = root / "future"
    (future / layout.WORKERS_DIR).mkdir(parents=True)
    (future / layout.RUN_MARKER).write_text(json.dumps({"format": "tensortap-run", "format_version": 99}))
    with Server(str(root)) as s:
        ids = run_ids(s.url)
        by = {r["name"]: r for r in get_json(s.url + "api/runs")["runs"]}
        assert by["future"]["state"] == "unreadable" and "store format 99" in by["future"]["error"]
        assert "Upgrade tensortap" in by["future"]["error"]
        d = get_json(s.url + f"api/run?run={ids['future']}")
        assert "store format 99" in d["error"]
        assert get_json(s.url + f"api/scalars?run={ids['future']}")["error"] == d["error"]
        assert by["good"]["state"] == "complete"


def test_token_cookie_host_and_bind(runs):
    with Server(runs, token="tok-123") as s:
        base = f"http://127.0.0.1:{s.port}/"
        assert s.url.endswith("?token=tok-123")
        assert get(base)[0] == 401 and get(base + "?token=wrong")[0] == 401
        assert get(base + "api/runs")[0] == 401 and get(base + "static/app.js")[0] == 401
        status, headers, _ = get(base + "?token=tok-123")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert get(base + "api/runs", headers={"Cookie": "tt_token=tok-123"})[0] == 200
        assert get(base + "api/runs", headers={"Cookie": "tt_token=nope"})[0] == 401
        assert get(base + "api/runs", headers={"Authorization": "Bearer tok-123"})[0] == 200
    # loopback without a token: only requests addressed to a loopback name (no DNS rebinding)
    with Server(runs) as s:
        assert s.token is None
        assert get(s.url + "api/runs")[0] == 200
        assert get(s.url + "api/runs", headers={"Host": "attacker.example:80"})[0] == 403
        assert get(s.url + "api/runs", headers={"Host": f"localhost:{s.port}"})[0] == 200
    # any other host: a token is generated
    with Server(runs, host="0.0.0.0") as s:
        assert s.token and len(s.token) >= 20 and s.url.endswith("?token=" + s.token)
        local = f"http://127.0.0.1:{s.port}/"
        assert get(local + "api/runs")[0] == 401 and get(local + "api/runs?token=" + s.token)[0] == 200
    with pytest.raises(ConfigError, match="--token"):
        Server(runs, token="has space")


def test_cli_prints_the_url_with_its_token(runs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    p = subprocess.Popen([sys.executable, "-m", "tensortap.cli", "serve", runs, "--host", "0.0.0.0", "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        lines = [p.stdout.readline() for _ in range(2)]
        url = lines[1].split("open ", 1)[1].strip()
        assert url.startswith("http://") and "?token=" in url
        port = int(url.split(":")[2].split("/")[0])
        token = url.split("?token=")[1]
        assert get(f"http://127.0.0.1:{port}/?token={token}")[0] == 200
        assert get(f"http://127.0.0.1:{port}/")[0] == 401
    finally:
        p.terminate()
        p.wait(timeout=10)
    bad = subprocess.run([sys.executable, "-m", "tensortap.cli", "serve", os.path.join(runs, "no-such-dir")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_a_busy_port_is_a_clear_error(runs):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match="--port 0 picks a free one"):
            Server(runs, port=port)


def test_an_s3_prefix_of_runs(tt_s3, tmp_path):
    prefix = tt_s3.new_url("serve")
    mlp_run(prefix + "/one", steps=3)
    mlp_run(prefix + "/two", steps=4)
    with Server(prefix) as s:
        assert s.catalog.interval == 2.0
        ids = run_ids(s.url)
        assert set(ids) == {"one", "two"}
        by = {r["name"]: r for r in get_json(s.url + "api/runs")["runs"]}
        assert by["two"]["steps"] == len(tt.create_trial(prefix + "/two").steps())
        d = get_json(s.url + f"api/scalars?run={ids['one']}")
        assert d["series"]["loss"]["train"]["x"]
