"""Live rules in the rules process: rules really run in a second process, results come back and
are recorded, stop_training still stops; an unpicklable rule (or one in __main__) falls back to the
rules thread with a warning naming it; a rules process that dies, hangs or fails is reported
and never hangs training or close()."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import tensortap as tt
from tensortap.rules import Rule
from tensortap.rules.process import RulesProcess
from tensortap.testing import NumpyMLP, make_data


class WhereAmI(Rule):
    """Fires at `at_step`; its message says which process evaluated it."""

    name = "where_am_i"

    def __init__(self, at_step: int = 3) -> None:
        super().__init__()
        self.at_step = at_step

    def invoke_at_step(self, trial, step):
        trial.tensor("loss").value(step)
        return step >= self.at_step, f"pid {os.getpid()}", {"pid": os.getpid()}


class DieAt(Rule):
    """Ends the process evaluating it at `step` (a rule that crashes its interpreter)."""

    name = "die_at"

    def __init__(self, step: int, parent: int) -> None:
        super().__init__()
        self.step, self.parent = step, parent

    def invoke_at_step(self, trial, step):
        if step == self.step and os.getpid() != self.parent:
            os._exit(3)
        return False


class HangAt(Rule):
    """Never returns at `step` (a rule stuck in a loop)."""

    name = "hang_at"

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def invoke_at_step(self, trial, step):
        if step == self.step:
            time.sleep(3600)
        return False


class OddValues(Rule):
    """Fires with values that do not pickle (a lock) beside a numpy array."""

    name = "odd_values"

    def invoke_at_step(self, trial, step):
        return True, "odd", {"lock": threading.Lock(), "norm": np.array([1.0, 2.0])}


class Boom(Rule):
    name = "boom"

    def invoke_at_step(self, trial, step):
        if step == 1:
            raise ValueError("bad tensor shape in boom")
        return False


def train(hook, steps, pause=0.0):
    """Train the numpy MLP for `steps` steps through `hook`; returns the steps done."""
    model = NumpyMLP()
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(64, seed=1)
    done = 0
    for _ in range(steps):
        model.train_step(x, y, lr=0.1)
        done += 1
        time.sleep(pause)
    return done


def new_hook(run_dir):
    return tt.Hook(run_dir, include_collections=["weights", "losses"], save_config=tt.SaveConfig(save_interval=1))


@pytest.mark.parametrize("where", ["process", "thread"])
def test_rules_run_where_asked_and_stop_training(run_dir, monkeypatch, where):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", where)
    hook = new_hook(run_dir)
    hook.add_rule(WhereAmI(at_step=3), action="stop_training")
    with pytest.raises(tt.StopTraining, match="where_am_i fired at step 3"):
        train(hook, 300, pause=0.01)
    assert 3 < hook.step < 100, hook.step
    hook.close()
    recs = [r for r in tt.create_trial(run_dir).rule_results() if r["rule"] == "where_am_i"]
    assert [r["step"] for r in recs][:4] == [0, 1, 2, 3] and recs[3]["fired"]
    pids = {r["values"]["pid"] for r in recs}
    assert (pids == {os.getpid()}) == (where == "thread"), pids
    assert not hook.errors, hook.errors


def test_unpicklable_rule_falls_back_to_the_thread_with_a_warning(run_dir):
    class LocalRule(WhereAmI):  # a local class cannot be pickled
        name = "local_rule"

    hook = new_hook(run_dir)
    with pytest.warns(RuntimeWarning, match=r"rule 'local_rule' \(.*LocalRule\) cannot be pickled.*on a thread"):
        hook.add_rule(LocalRule(at_step=2), action="stop_training")
    hook.add_rule(WhereAmI(at_step=10**6))  # this one still goes to the process
    with pytest.raises(tt.StopTraining, match="local_rule fired at step 2"):
        train(hook, 300, pause=0.01)
    hook.close()
    recs = tt.create_trial(run_dir).rule_results()
    assert {r["values"]["pid"] for r in recs if r["rule"] == "local_rule"} == {os.getpid()}
    assert os.getpid() not in {r["values"]["pid"] for r in recs if r["rule"] == "where_am_i"}


def test_script_without_main_guard_and_a_rule_in_main(tmp_path):
    """The rules process does not re-run the user's script (no `if __name__ == "__main__"` needed);
    a rule class in __main__ cannot be imported there, so it runs on the thread, with a warning."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import warnings
        import tensortap as tt
        from tensortap.testing import NumpyMLP, make_data

        class MainRule(tt.rules.Rule):
            name = "main_rule"
            def invoke_at_step(self, trial, step):
                return step == 2

        print("TRAINING STARTS")
        hook = tt.Hook({str(tmp_path / 'run')!r}, include_collections=["losses"],
                       save_config=tt.SaveConfig(save_interval=1))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            hook.add_rule(MainRule(), action="log")
            hook.add_rule(tt.rules.get("loss_not_decreasing")(num_steps=2))
        print("WARNINGS", [str(x.message) for x in w])
        model = NumpyMLP()
        hook.register(model)
        hook.register_loss(model)
        x, y = make_data(64, seed=1)
        for _ in range(5):
            model.train_step(x, y, lr=0.1)
        hook.close()
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("TRAINING STARTS") == 1
    assert "rule 'main_rule' (MainRule) is defined in __main__" in r.stdout and "on a thread" in r.stdout
    recs = tt.create_trial(str(tmp_path / "run")).rule_results()
    assert sorted({(x["rule"], x["step"]) for x in recs}) == sorted(
        {(n, s) for n in ("main_rule", "loss_not_decreasing") for s in range(5)})
    assert [x["step"] for x in recs if x["rule"] == "main_rule" and x["fired"]] == [2]


def test_a_dead_rules_process_is_reported_and_training_goes_on(run_dir):
    hook = new_hook(run_dir)
    hook.add_rule(DieAt(step=2, parent=os.getpid()), action="stop_training")
    assert train(hook, 40, pause=0.01) == 40
    t0 = time.monotonic()
    hook.close()
    assert time.monotonic() - t0 < 10
    assert any("live rules process exited unexpectedly" in e and "exit code 3" in e for e in hook.errors), hook.errors
    assert any(e.get("event") == "error" and "exited unexpectedly" in e["what"]
               for e in tt.create_trial(run_dir).events())


def test_a_hung_rule_does_not_hang_training_or_close(run_dir, monkeypatch):
    monkeypatch.setattr(RulesProcess, "stall_timeout", 1.5)
    hook = new_hook(run_dir)
    hook.add_rule(HangAt(step=1))
    t0 = time.monotonic()
    assert train(hook, 30) == 30
    hook.close()
    assert time.monotonic() - t0 < 15
    assert any("rules process (it sent nothing for 1.5 s): rule 'hang_at' at step 1" in a
               for a in hook.abandoned), hook.abandoned

    hook = new_hook(run_dir + "2")
    hook.add_rule(HangAt(step=1))
    train(hook, 5)
    t0 = time.monotonic()
    hook.close(timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert any("the close timeout ran out" in a for a in hook.abandoned), hook.abandoned


def test_a_failing_rule_is_reported_from_the_process(run_dir):
    hook = new_hook(run_dir)
    hook.add_rule(Boom())
    hook.add_rule(WhereAmI(at_step=10**6))
    train(hook, 4)
    hook.close()
    assert any(e.startswith("rule boom failed at step 1: ValueError: bad tensor shape in boom") for e in hook.errors)
    recs = tt.create_trial(run_dir).rule_results()
    assert [r["step"] for r in recs if r["rule"] == "boom"] == [0, 2, 3]
    assert [r["step"] for r in recs if r["rule"] == "where_am_i"] == [0, 1, 2, 3]


def test_bad_setting_is_a_clear_error(run_dir, monkeypatch):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "gpu")
    with pytest.raises(tt.ConfigError, match='TENSORTAP_LIVE_RULES=.gpu.: use "process"'):
        new_hook(run_dir).add_rule(WhereAmI())


def test_values_that_do_not_pickle_come_back_as_json(run_dir):
    got = []
    hook = new_hook(run_dir)
    hook.add_rule(OddValues(), action=got.append)
    train(hook, 2)
    hook.close()
    assert [r.step for r in got] == [0, 1] and isinstance(got[0], tt.rules.RuleResult)
    assert got[0].values["norm"] == [1.0, 2.0] and isinstance(got[0].values["lock"], str)


class Counting(Rule):
    """Keeps state the user's code reads (like tensortap-pruning's rule does)."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.seen = []
        self.pid = None

    def invoke_at_step(self, trial, step):
        self.seen.append(step)
        self.pid = os.getpid()
        return step == 2


def test_the_users_rule_instance_follows_the_rules_process(run_dir):
    rule = Counting()
    hook = new_hook(run_dir)
    hook.add_rule(rule)
    train(hook, 4)
    hook.flush()
    deadline = time.monotonic() + 20
    while len(rule.seen) < 3 and time.monotonic() < deadline:  # evaluated while training goes on
        time.sleep(0.02)
    assert rule.seen[:3] == [0, 1, 2] and rule.pid not in (None, os.getpid())
    hook.close()
    assert rule.seen == [0, 1, 2, 3] and rule.last_result.step == 3 and not rule.last_result.fired
