"""What makes live rules cheap, checked for correctness: reading a step's tensors together
(Trial.values_at, reused read buffers), the refresh that keeps what did not change, the sampled
first looks of the built-in rules (never a different answer than the exact test), statistics
shared between rules, one "rules" record per evaluated step (older "rule" records still read),
and the rule state the rules process copies back (public attributes only)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensortap as tt
from tensortap.rules import Rule
from tensortap.rules.results import RuleResult, results_record
from tensortap.rules.builtin._common import all_finite, finite_of, mean_abs_of, norm_of, surely_not_close
from tensortap.rules.builtin.tensors import close
from tensortap.rules.cache import CachedTrial
from tests.core.tt_rules_helpers import mlp_run


def test_values_at_equals_value_and_survives_buffer_reuse(tmp_path):
    run = str(tmp_path / "run")
    mlp_run(run, steps=12)
    trial = tt.create_trial(run)
    names = trial.tensor_names()
    held = trial.values_at(names, 0)  # views of one read buffer, kept while later steps are read
    copies = {n: v.copy() for n, v in held.items()}
    assert set(held) == set(names)
    for s in trial.steps():
        got = trial.values_at(names + ["no such tensor"], s)
        assert set(got) == set(names)
        for n in names:
            want = trial.tensor(n).value(s)
            assert got[n].dtype == want.dtype and got[n].shape == want.shape
            assert got[n].tobytes() == want.tobytes()
            assert got[n].flags.aligned
    for n in names:  # the buffer those views live in was not handed out again
        assert held[n].tobytes() == copies[n].tobytes()


def test_values_at_leaves_out_damaged_records_that_value_reports(tmp_path):
    run = str(tmp_path / "run")
    mlp_run(run, steps=3, n_hidden=128)  # weights over 2 KiB: records of their own (smaller ones share packs)
    trial = tt.create_trial(run)
    r = trial._readers()[0]
    si = r.steps[1]
    nid = r.nid_of[("fc1.weight", "value")]
    off = int(si.find(nid)["offset"])
    path = r._data_path(si.seg)
    with open(path, "r+b") as f:  # flip one payload byte of fc1.weight at step 1
        f.seek(off + 40)
        b = f.read(1)
        f.seek(off + 40)
        f.write(bytes([b[0] ^ 0xFF]))
    trial = tt.create_trial(run)
    got = trial.values_at(trial.tensor_names(), 1)
    assert "fc1.weight" not in got and "fc2.weight" in got
    with pytest.raises(tt.CorruptRunError, match="checksum"):
        trial.tensor("fc1.weight").value(1)


def test_refresh_sees_new_steps_and_keeps_derived_data_when_nothing_changed(tmp_path):
    run = str(tmp_path / "run")
    hook, model, _ = mlp_run(run, steps=3, close=False)
    hook.flush()
    trial = tt.create_trial(run)
    assert trial.steps() == [0, 1, 2]
    names = trial._names()
    assert trial.refresh() == 0 and trial._names() is names  # nothing new: nothing rebuilt
    x = np.ones((4, 8), np.float32)
    hook.begin_step()
    hook.save_tensor("extra", x, collections=["extra"])
    hook.flush()
    assert trial.refresh() == 1
    assert trial.steps() == [0, 1, 2, 3] and trial.tensor_names(step=3) == ["extra"]
    assert "extra" in trial.tensor_names(collection="extra") and "extra" not in trial.tensor_names(step=2)
    hook.close()


def test_a_new_worker_appearing_within_the_same_second_is_found(tmp_path):
    run = str(tmp_path / "run")
    h0 = tt.Hook(run, include_collections=["losses"], rank=0)
    h0.begin_step()
    h0.save_tensor("loss", np.float32(1.0), collections=["losses"])
    h0.flush()
    trial = tt.create_trial(run)
    assert trial.workers() == ["worker-0"]
    h1 = tt.Hook(run, include_collections=["losses"], rank=1)  # right after: the same mtime tick, maybe
    h1.begin_step()
    h1.save_tensor("loss", np.float32(2.0), collections=["losses"])
    h1.flush()
    trial.refresh()
    assert trial.workers() == ["worker-0", "worker-1"]
    assert trial.tensor("loss").value(0, worker="worker-1") == np.float32(2.0)
    h0.close()
    h1.close()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([1, 7, 600, 5000]),
       change=st.sampled_from(["none", "one", "tiny", "all", "nan", "inf", "nan-both"]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_the_sampled_first_look_never_changes_allclose(seed, size, change, dtype):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(size).astype(dtype)
    b = a.copy()
    i = int(rng.integers(size))
    if change == "one":
        b[i] += 1.0
    elif change == "tiny":
        b = b + b * np.asarray(5e-6, dtype)  # inside rtol=1e-5
    elif change == "all":
        b = b + 1.0
    elif change == "nan":
        b[i] = np.nan
    elif change == "inf":
        b[i] = np.inf
    elif change == "nan-both":
        a[i] = b[i] = np.nan
    for equal_nan in (False, True):
        assert close(a, b, 1e-5, 1e-8, equal_nan) == bool(np.allclose(a, b, 1e-5, 1e-8, equal_nan))
        if surely_not_close([(a, b)], 1e-5, 1e-8)[0]:
            assert not np.allclose(a, b, 1e-5, 1e-8, equal_nan)


def test_surely_not_close_answers_each_pair_and_skips_what_it_cannot_compare():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 100)).astype(np.float32)
    pairs = [(w, w + 1), (w, w.copy()), (w, w[:10]), (np.arange(4000), np.arange(4000) + 1), (w, w * (1 + 1e-7))]
    assert surely_not_close(pairs, 1e-5, 1e-8) == [True, False, False, False, False]
    assert surely_not_close([], 1e-5, 1e-8) == []


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64, np.int32])
def test_finiteness_shortcuts_agree_with_isfinite(tmp_path, dtype):
    rng = np.random.default_rng(1)
    big = np.full(1000, 1e30 if dtype in (np.float32, np.float64) else 1, dtype)  # squares overflow float32
    values = {"clean": rng.standard_normal(1000).astype(dtype), "big": big}
    if np.dtype(dtype).kind in "fc":
        values["nan"] = values["clean"].copy()
        values["nan"][500] = np.nan
        values["inf"] = values["clean"].copy()
        values["inf"][3] = -np.inf
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights"])
    hook.begin_step()
    for n, v in values.items():
        hook.save_tensor(n, v, collections=["x"])
    hook.close()
    plain = tt.create_trial(str(tmp_path / "run"))
    for n, v in values.items():
        want = bool(np.isfinite(v).all()) if np.dtype(dtype).kind in "fc" else True
        assert all_finite(v) == want, n
        assert finite_of(plain, n, 0) == want, n
        cached = CachedTrial(plain)
        if np.dtype(dtype).kind == "f":
            mean_abs_of(cached, n, 0)  # vanishing_gradient's statistic first: reused by the test
        assert finite_of(cached, n, 0) == want, n
        assert finite_of(CachedTrial(plain), n, 0) == want, n


def test_statistics_are_computed_once_per_tensor_and_step(tmp_path):
    run = str(tmp_path / "run")
    mlp_run(run, steps=3)
    cached = CachedTrial(tt.create_trial(run))
    w = cached.tensor("fc1.weight").value(1)
    n1 = norm_of(cached, "fc1.weight", 1)
    assert n1 == pytest.approx(float(np.linalg.norm(w)), rel=1e-6)
    assert cached.stat("fc1.weight", 1, "l2") == n1
    cached.keep_stat("fc1.weight", 1, "l2", 123.0)
    assert norm_of(cached, "fc1.weight", 1) == 123.0  # from the memo, not computed again
    assert mean_abs_of(cached, "fc1.weight", 1) == pytest.approx(float(np.mean(np.abs(w))), rel=1e-5)
    cached.evict(before=2)
    assert cached.stat("fc1.weight", 1, "l2") is None


def test_results_record_is_read_like_the_older_one_record_per_result(tmp_path):
    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["losses"])
    hook.begin_step()
    hook.save_tensor("loss", np.float32(1.0), collections=["losses"])
    hook.flush()  # the writer exists once a step went to it
    old = RuleResult("old_style", 0, True, "fired the old way", {"x": np.float32(2.5)})
    hook.writer.submit_record(old.to_record())
    new = [RuleResult("a", 0, False, "fine", {"v": np.arange(3)}), RuleResult("b", 0, True, "fired", {}, False),
           RuleResult("c", 0, False, "skipped: no data", skipped=True)]
    hook.writer.submit_record(results_record(new))
    hook.writer.submit_record({"type": "rules", "fields": ["rule"], "results": [["x", "too many"], 7]})  # damaged
    hook.close()
    recs = tt.create_trial(run).rule_results()
    assert [r["rule"] for r in recs] == ["old_style", "a", "b", "c"]
    assert recs[0]["fired"] and recs[0]["values"] == {"x": 2.5}
    assert recs[1]["values"] == {"v": [0, 1, 2]} and not recs[1]["fired"] and recs[1]["type"] == "rule"
    assert recs[2]["fired"] and recs[2]["message"] == "fired" and recs[3]["skipped"]
    assert all(r["worker"] == "worker-0" and isinstance(r["time"], float) for r in recs)
    from tensortap.summary import run_summary  # what `tensortap ls` shows

    s = run_summary(tt.create_trial(run))
    assert s["rule_evaluations"] == 4 and [f["rule"] for f in s["rules_fired"]] == ["old_style", "b"]


class KeepsState(Rule):
    """Public state the user reads, private history that stays in the rules process."""

    name = "keeps_state"

    def __init__(self) -> None:
        super().__init__()
        self.seen = []
        self._history = []

    def invoke_at_step(self, trial, step):
        self.seen.append(step)
        self._history.append(step)
        return False


@pytest.mark.skipif(os.name != "posix", reason="the rules process needs POSIX")
def test_live_rules_write_one_record_per_step_and_copy_public_state_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "process")
    run = str(tmp_path / "run")
    rule = KeepsState()
    hook, _, _ = mlp_run(run, steps=6, rules=[rule, tt.rules.get("loss_not_decreasing")(num_steps=2)], close=False)
    hook.close()
    assert hook._rules.where == "process" and hook._rules._proc is not None  # really in the second process
    assert rule.seen == [0, 1, 2, 3, 4, 5] and rule._history == []  # public copied back, private not
    trial = tt.create_trial(run)
    kinds = [rec["type"] for r in trial._readers() for rec in r.records]
    assert kinds.count("rules") == 6 and "rule" not in kinds  # one record per evaluated step
    recs = trial.rule_results()
    kept = [(r["rule"], r["step"]) for r in recs if r["rule"] == "keeps_state"]
    assert kept == [("keeps_state", s) for s in range(6)]
    assert len(recs) == 12
    stats = hook._rules.process_stats
    assert stats["steps"] == 6 and 0 <= stats["cpu_steps_s"] <= stats["cpu_s"]


def test_invoke_rule_results_do_not_change_with_prefetching(tmp_path):
    run = str(tmp_path / "run")
    mlp_run(run, steps=12)
    for name in ("unchanged_tensor", "weight_update_ratio", "exploding_tensor", "vanishing_gradient", "all_zero"):
        a = tt.invoke_rule(tt.rules.get(name)(), tt.create_trial(run))
        trial = tt.create_trial(run)
        rule = tt.rules.get(name)()
        b = [rule.invoke(trial, s) for s in trial.steps()]  # plain trial: no cache, no prefetch
        assert ([(r.step, r.fired, r.message, r.skipped) for r in a]
                == [(r.step, r.fired, r.message, r.skipped) for r in b])


class BurnsCpu(Rule):
    """Uses `ms` milliseconds of CPU per evaluation (an expensive rule)."""

    name = "burns_cpu"

    def __init__(self, ms: float = 20.0) -> None:
        super().__init__()
        self.ms = ms

    def invoke_at_step(self, trial, step):
        end = time.process_time() + self.ms / 1000.0
        while time.process_time() < end:
            pass
        trial.tensor("loss").value(step)
        return False


@pytest.mark.skipif(os.name != "posix", reason="the rules process needs POSIX")
def test_cpu_budget_skips_steps_saved_while_it_waits_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "process")
    monkeypatch.setenv("TENSORTAP_RULES_CPU", "0.05")  # 20 ms of CPU: then ~0.4 s without evaluating
    run = str(tmp_path / "run")
    hook, _, _ = mlp_run(run, steps=4, rules=[BurnsCpu(20.0)], close=False)
    for _ in range(30):  # more steps while the budget keeps the rules process waiting
        hook.begin_step()
        hook.save_tensor("loss", np.float32(1.0), collections=["losses"])
        time.sleep(0.01)
    hook.close()
    trial = tt.create_trial(run)
    done = [r["step"] for r in trial.rule_results()]
    skipped = [s for e in trial.events() if e.get("event") == "rules_skipped" for s in e["steps"]]
    assert skipped
    assert "TENSORTAP_RULES_CPU" in next(e["detail"] for e in trial.events() if e.get("event") == "rules_skipped")
    assert done == sorted(done) and done[-1] == trial.steps()[-1]  # in order; the last saved step evaluated
    assert sorted(done + skipped) == trial.steps()  # every saved step evaluated or reported skipped
    assert hook._rules.process_stats["skipped"] == len(skipped)


@pytest.mark.skipif(os.name != "posix", reason="the rules process needs POSIX")
def test_a_wrong_cpu_budget_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "process")
    monkeypatch.setenv("TENSORTAP_RULES_CPU", "lots")
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["losses"])
    with pytest.raises(tt.ConfigError, match="TENSORTAP_RULES_CPU='lots'.*0 to 1"):
        hook.add_rule(tt.rules.get("loss_not_decreasing")())
    hook.close()


@pytest.mark.skipif(os.name != "posix", reason="the rules process needs POSIX")
def test_below_four_cpus_the_budget_is_automatic_after_a_burst(tmp_path, monkeypatch):
    """No TENSORTAP_RULES_CPU, the rules process on 2 CPUs (sharing them with training): every
    step is evaluated while the burst lasts (AUTO_BURST CPU-seconds), then at most AUTO_SHARE of
    a CPU: steps saved meanwhile are skipped and recorded."""
    from tensortap.rules import worker

    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "process")
    monkeypatch.delenv("TENSORTAP_RULES_CPU", raising=False)
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if before is not None:
        os.sched_setaffinity(0, sorted(before)[:2])  # the rules process inherits it
    try:
        assert worker.usable_cpus() < worker.AUTO_CORES
        assert worker.cpu_budget() == (worker.AUTO_SHARE, worker.AUTO_BURST)
        run = str(tmp_path / "run")
        burn_ms = 250.0
        t0 = time.monotonic()  # before the rules process starts (its budget's clock starts with it)
        hook = tt.Hook(run, include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1),
                       close_timeout=120)  # a loaded machine stretches the burning rule's wall time
        hook.add_rule(BurnsCpu(burn_ms))
        for _ in range(40):  # ~4 s of training: the burst (8 evaluations) runs out within it
            hook.begin_step()
            hook.save_tensor("loss", np.float32(1.0), collections=["losses"])
            time.sleep(0.1)
        hook.close()
        elapsed = time.monotonic() - t0
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    trial = tt.create_trial(run)
    done = [r["step"] for r in trial.rule_results()]
    skipped = [s for e in trial.events() if e.get("event") == "rules_skipped" for s in e["steps"]]
    burst_steps = int(worker.AUTO_BURST * 1000 / burn_ms)
    assert done[:burst_steps] == trial.steps()[:burst_steps]  # the burst: every step, in order
    assert skipped and sorted(done + skipped) == trial.steps() and done[-1] == trial.steps()[-1]
    # the budget held: the burst, then AUTO_SHARE of a CPU over the run (overdrawn by at most two
    # evaluations: the one started while in credit, and close()'s, which always evaluates the last step)
    per_step = hook._rules.process_stats["per_step"]  # the evaluations' CPU-seconds (burn_ms and reading)
    cpu = sum(per_step)
    assert cpu <= worker.AUTO_BURST + worker.AUTO_SHARE * elapsed + 2 * max(per_step), (cpu, elapsed, len(done))
    assert len(done) < len(trial.steps()) - 10, (len(done), elapsed)
    assert "automatic when unset" in next(e["detail"] for e in trial.events() if e.get("event") == "rules_skipped")


class _FakeClock:
    """time.monotonic and time.process_time of a rules process whose only CPU use is its rules."""

    def __init__(self) -> None:
        self.now = self.cpu = 0.0

    def monotonic(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.cpu

    def burn(self, seconds: float) -> None:
        self.now += seconds
        self.cpu += seconds


class _CostsOnClock(Rule):
    """Costs `cost` seconds of the fake clock's CPU per evaluation."""

    name = "costs_on_clock"

    def __init__(self, clock: _FakeClock, cost: float) -> None:
        super().__init__()
        self.clock, self.cost = clock, cost

    def invoke_at_step(self, trial, step):
        self.clock.burn(self.cost)
        return False


def test_the_budget_is_never_overdrawn_by_more_than_one_evaluation_before_close(tmp_path, monkeypatch):
    """The rules process's loop on a fake clock: a step saved every 0.1 s, evaluations of 0.23
    CPU-s, share 0.1 after a 1 CPU-s burst, the process waking 1 ms after the budget allows. The
    burst evaluates steps in order; after it each wake evaluates the newest step only, so the
    debt never exceeds one evaluation, and two with close()'s (once, a wake evaluated the oldest
    pending step too whenever any credit was left: twice the debt)."""
    from tensortap.rules import protocol, worker
    from tensortap.rules.evaluator import Evaluator

    run = str(tmp_path / "run")
    hook = tt.Hook(run, include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    for _ in range(80):
        hook.begin_step()
        hook.save_tensor("loss", np.float32(1.0), collections=["losses"])
    hook.close()
    clock = _FakeClock()
    monkeypatch.setattr(worker, "time", clock)
    sent: list = []
    ev: Evaluator[int] = Evaluator(out_dir=run, report=lambda what, e: sent.append((what, e)))
    share, burst, cost = 0.1, 1.0, 0.23
    ev.rules[0] = _CostsOnClock(clock, cost)
    w = worker._Worker(ev, sent.append, share, burst)
    lowest = 0.0
    for step in range(80):  # the serve loop: a message, then evaluate(); on a timeout, evaluate()
        arrives = step * 0.1
        while w.pending and w.next_ok + 0.001 < arrives:
            clock.now = max(clock.now, w.next_ok + 0.001)
            w.evaluate()
            lowest = min(lowest, w.credit)
        clock.now = max(clock.now, arrives)
        w.handle(protocol.Steps([step]))
        w.evaluate()
        lowest = min(lowest, w.credit)
    w.handle(protocol.Close())
    assert not [s for s in sent if isinstance(s, tuple)]  # nothing failed
    done = next(m for m in sent if isinstance(m, protocol.Done)).stats
    evaluated = [m.step for m in sent if isinstance(m, protocol.Results)]
    assert evaluated[:4] == [0, 1, 2, 3] and evaluated == sorted(evaluated) and evaluated[-1] == 79
    skipped = [s for m in sent if isinstance(m, protocol.Skipped) for s in m.steps]
    assert sorted(evaluated + skipped) == list(range(80)) and len(skipped) == done["skipped"] > 40
    assert lowest >= -cost - 1e-9, lowest  # before close(): one evaluation in debt at most
    spent = sum(done["per_step"])
    assert spent <= burst + share * clock.now + 2 * cost + 1e-9, (spent, clock.now)


def test_four_cpus_or_more_need_no_budget_and_zero_turns_it_off(monkeypatch):
    from tensortap.rules import worker

    monkeypatch.delenv("TENSORTAP_RULES_CPU", raising=False)
    monkeypatch.setattr(worker, "usable_cpus", lambda: 4)
    assert worker.cpu_budget() == (0.0, 0.0)
    monkeypatch.setattr(worker, "usable_cpus", lambda: 2)
    assert worker.cpu_budget() == (worker.AUTO_SHARE, worker.AUTO_BURST)
    monkeypatch.setenv("TENSORTAP_RULES_CPU", "0")
    assert worker.cpu_budget() == (0.0, 0.0)
    monkeypatch.setenv("TENSORTAP_RULES_CPU", "0.2")
    assert worker.cpu_budget() == (0.2, 0.0)
