"""What crosses the pipe to the rules process is typed and checked: a rules process speaking
another protocol version is refused at start (its rules then run on the thread, with a warning
naming both versions), and a message of a type a side does not know is reported as a
ProtocolError naming it while evaluation goes on."""
from __future__ import annotations

import pytest
import tensortap as tt
from tensortap.rules import Rule, protocol
from tensortap.rules.process import RulesProcess
from tensortap.testing import NumpyMLP, make_data


class ReadsLoss(Rule):
    """Reads the loss at every step; never fires."""

    name = "reads_loss"

    def invoke_at_step(self, trial, step):
        trial.tensor("loss").value(step)
        return False


def new_hook(run_dir: str) -> tt.Hook:
    return tt.Hook(run_dir, include_collections=["weights", "losses"], save_config=tt.SaveConfig(save_interval=1))


def train(hook: tt.Hook, steps: int) -> None:
    model = NumpyMLP()
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(64, seed=1)
    for _ in range(steps):
        model.train_step(x, y, lr=0.1)


def test_a_rules_process_of_another_protocol_version_is_refused(run_dir, monkeypatch):
    # this (training) side speaks version N+1; the child it starts is a fresh interpreter: N
    monkeypatch.setattr(protocol, "PROTOCOL_VERSION", protocol.PROTOCOL_VERSION + 1)
    hook = new_hook(run_dir)
    want = (rf"could not start the live rules process .*speaks rules protocol {protocol.PROTOCOL_VERSION - 1}, "
            rf"this tensortap speaks {protocol.PROTOCOL_VERSION}.*on a thread")
    with pytest.warns(RuntimeWarning, match=want):
        hook.add_rule(ReadsLoss())
    assert hook._rules._proc is None and hook._rules._thread is not None
    train(hook, 4)
    hook.close()
    steps = [r["step"] for r in tt.create_trial(run_dir).rule_results() if r["rule"] == "reads_loss"]
    assert steps == [0, 1, 2, 3]  # evaluated all the same, on the thread
    assert not hook.errors, hook.errors


def test_the_rules_process_reports_a_message_it_does_not_know_and_goes_on(run_dir):
    hook = new_hook(run_dir)
    hook.add_rule(ReadsLoss())
    proc = hook._rules._proc
    assert isinstance(proc, RulesProcess)
    proc._send(("steps", [0]))  # what an older tensortap sent: a positional tuple
    train(hook, 4)
    hook.close()
    assert [e for e in hook.errors if "could not handle a message (builtins.tuple)" in e
            and "ProtocolError: expected AddRule or Steps or Close" in e], hook.errors
    steps = [r["step"] for r in tt.create_trial(run_dir).rule_results() if r["rule"] == "reads_loss"]
    assert steps == [0, 1, 2, 3]
    assert proc.stats["steps"] == 4  # the child served to the end


def test_the_training_side_refuses_a_message_it_does_not_know(run_dir):
    hook = new_hook(run_dir)
    hook.add_rule(ReadsLoss())
    proc = hook._rules._proc
    with pytest.raises(protocol.ProtocolError, match=r"expected Results or .* got builtins\.tuple"):
        proc._handle(("results", 0, [], {}, {}))
    train(hook, 2)
    hook.close()
    assert [r["step"] for r in tt.create_trial(run_dir).rule_results()] == [0, 1]
