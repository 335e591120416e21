"""Live rules and actions: evaluated beside a real training loop, results recorded in the run,
actions (stop_training, log, callback, webhook, write_status) taking effect; failing actions
reported without stopping training; stalled_training live and offline."""
from __future__ import annotations

import http.server
import json
import logging
import threading
import time

import fsspec
import numpy as np
import pytest

import tensortap as tt
from tensortap.cli import main as cli
from tensortap.testing import NumpyMLP, make_data
from tt_rules_helpers import first_fired, mlp_run

R = tt.rules.get


def nan_at(step_no):
    def inject(model, step, x):
        if step == step_no:
            model.params["fc1.weight"][0, 0] = np.nan
    return inject


def slow_loop(hook, model, steps, inject=None, pause=0.01):
    """A user's loop: one train step per iteration, a little work per step; returns steps done."""
    x, y = make_data(256, seed=1)
    done = 0
    for i in range(steps):
        if inject is not None:
            inject(model, i, x)
        model.train_step(x[:32], y[:32], lr=0.1)
        done += 1
        time.sleep(pause)
    return done


def test_stop_training_at_next_step_boundary(run_dir):
    model = NumpyMLP()
    hook = tt.Hook(run_dir, include_collections=["weights", "losses"], save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(R("exploding_tensor")(), action="stop_training")
    hook.register(model)
    hook.register_loss(model)
    done = 0
    with pytest.raises(tt.StopTraining, match="exploding_tensor fired at step 10"):
        done = slow_loop(hook, model, 300, inject=nan_at(10))
    stopped_at = hook.step
    hook.close()
    assert 10 < stopped_at < 40, stopped_at  # soon after the NaN, long before the loop's end
    trial = tt.create_trial(run_dir)
    fired = [r for r in trial.rule_results() if r["fired"]]
    assert fired and fired[0]["step"] == 10
    assert any(e["event"] == "stop_requested" for e in trial.events())
    assert done == 0


@pytest.mark.parametrize("where", ["process", "thread"])
def test_a_burst_of_firings_stops_training_with_the_first_ones_reason(run_dir, monkeypatch, where):
    """Rule results arrive in bursts when the rules catch up with training (a rules process still
    starting while a fast loop runs ahead): each firing before the next step boundary asks to stop,
    and training is told the FIRST one (step 3 here), not the last (step 6)."""
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", where)
    model = NumpyMLP(n_in=8, n_hidden=16, n_out=4, seed=0)
    x, y = make_data(64, seed=1)
    hook = tt.Hook(run_dir, include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    rule = R("loss_not_decreasing")(num_steps=3)
    hook.add_rule(rule, action="stop_training")
    hook.drive_steps()  # the test, as the trainer, chooses the step boundary where it looks for a stop
    for i in range(9):  # learning rate 0: a flat loss, the rule fires at steps 3 and 6
        hook.begin_step(tt.modes.TRAIN, step=i)
        hook.save_scalar("loss", model.loss(model.forward(x[:32]), y[:32]), collection="losses")
        model.backward()
        model.sgd_step(0.0)
    hook.end_step()
    deadline = time.monotonic() + 60  # both firings' actions have run once the last step's result is in
    while (rule.last_result is None or rule.last_result.step < 8) and time.monotonic() < deadline:
        time.sleep(0.01)
    reason = hook.take_stop_request()
    hook.close()
    fired = [r["step"] for r in tt.create_trial(run_dir).rule_results() if r["fired"]]
    assert fired == [3, 6], fired
    assert reason is not None and reason.startswith("rule loss_not_decreasing fired at step 3:"), reason
    assert not hook.errors, hook.errors


def test_results_recorded_and_shown_by_ls(run_url, capsys):
    hook, _, _ = mlp_run(run_url, steps=15, lr=0.0, batch=128, data=make_data(128, seed=1),
                         rules=[R("loss_not_decreasing")(num_steps=5), R("vanishing_gradient")()])
    trial = tt.create_trial(run_url)
    recs = trial.rule_results()
    by_rule = {n: [r for r in recs if r["rule"] == n] for n in ("loss_not_decreasing", "vanishing_gradient")}
    assert [r["step"] for r in by_rule["vanishing_gradient"]] == list(range(15))
    assert not any(r["fired"] for r in by_rule["vanishing_gradient"])
    assert [r["step"] for r in by_rule["loss_not_decreasing"] if r["fired"]] == [5, 10]
    assert cli(["ls", run_url]) == 0
    out = capsys.readouterr().out
    assert "30 evaluations, 2 fired" in out and "loss_not_decreasing at step 5" in out


def test_log_callback_write_status_actions(run_url, caplog):
    got = []
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        hook, _, _ = mlp_run(run_url, steps=14, before_step=nan_at(12), include=("weights", "losses"),
                             rules=[(R("exploding_tensor")(), ["log", got.append, "write_status"])])
    assert [r.step for r in got] == [12, 13] and all(isinstance(r, tt.rules.RuleResult) for r in got)
    assert "rule exploding_tensor fired at step 12" in caplog.text
    with fsspec.open(run_url + "/status.json") as f:
        status = json.load(f)
    assert status["rules"]["exploding_tensor"]["step"] == 13 and status["rules"]["exploding_tensor"]["fired"]


def test_callback_gets_hook_when_it_takes_two_arguments(run_dir):
    seen = []
    mlp_run(run_dir, steps=3, lr=0.0, include=("weights",),
            rules=[(R("unchanged_tensor")(), lambda res, hook: seen.append((res.step, hook.out_dir)))])
    assert seen == [(2, run_dir)]


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802
        n = int(self.headers["Content-Length"])
        type(self).bodies.append((self.headers["Content-Type"], json.loads(self.rfile.read(n))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_webhook_posts_json_to_a_real_server(run_dir):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
        hook_action = tt.rules.get_action("webhook")(url)
        mlp_run(run_dir, steps=13, before_step=nan_at(12), include=("weights",),
                rules=[(R("exploding_tensor")(), hook_action)])
    finally:
        srv.shutdown()
    assert len(_Receiver.bodies) == 1
    ctype, body = _Receiver.bodies[0]
    assert ctype == "application/json"
    assert body["rule"] == "exploding_tensor" and body["step"] == 12 and body["fired"] is True
    assert "NaN" in body["message"] and body["out_dir"] == run_dir


def test_failing_actions_are_reported_and_training_goes_on(run_dir):
    def broken(result):
        raise RuntimeError("pager service down")
    dead_url = tt.rules.get_action("webhook")("http://127.0.0.1:9/nothing-listens", timeout=1)
    hook, _, losses = mlp_run(run_dir, steps=16, before_step=nan_at(12), include=("weights", "losses"),
                              rules=[(R("exploding_tensor")(), [broken, dead_url])])
    assert len(losses) == 16  # training finished
    assert any("action callback for rule exploding_tensor failed" in e and "pager service down" in e
               for e in hook.errors)
    assert any("action webhook" in e for e in hook.errors)
    events = tt.create_trial(run_dir).events()
    assert any(e.get("event") == "error" and "pager service down" in e.get("error", "") for e in events)
    with pytest.raises(tt.ConfigError, match="webhook url"):
        tt.rules.get_action("webhook")("ftp://x")
    with pytest.raises(tt.ConfigError, match="unknown action"):
        tt.Hook(run_dir + "2").add_rule(R("all_zero")(), action="stop_trainig")


def test_stalled_training_live_stops_and_offline_reports_the_gap(run_url):
    model = NumpyMLP()
    hook = tt.Hook(run_url, include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(R("stalled_training")(threshold=0.6, stop_training_on_fire=True))
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(64, seed=1)
    with pytest.raises(tt.StopTraining, match="stalled"):
        for i in range(20):
            model.train_step(x, y)
            if i == 5:
                time.sleep(1.5)  # a hung data loader
    assert hook.step == 6
    hook.close()
    trial = tt.create_trial(run_url)
    live = [r for r in trial.rule_results() if r["fired"]]
    assert live[0]["step"] == 4 and "no step saved for" in live[0]["message"]  # step 5 was still running
    res = tt.invoke_rule(R("stalled_training")(threshold=0.6), trial)
    assert first_fired(res) == 5 and res[5].values["gap_seconds"] > 1.0  # step 5 took the 1.5 s
    assert first_fired(tt.invoke_rule(R("stalled_training")(threshold=5), trial)) is None


def test_live_value_cache_is_read_only_and_evicts(run_dir):
    from tensortap.rules.cache import CachedTrial

    mlp_run(run_dir, steps=6, include=("weights",))
    ct = CachedTrial(tt.create_trial(run_dir), max_bytes=10_000)
    a = ct.tensor("fc1.weight").value(3)
    assert ct.tensor("fc1.weight").value(3) is a  # the second rule gets the same array
    assert np.array_equal(a, tt.create_trial(run_dir).tensor("fc1.weight").value(3))
    with pytest.raises(ValueError):
        a[0, 0] = 1.0  # one rule cannot corrupt what the next one reads
    ct.evict(before=4)
    assert ct.tensor("fc1.weight").value(3) is not a
    assert ct.steps() == list(range(6)) and ct.tensor("fc1.weight").steps() == list(range(6))
