"""The step-driving API a trainer integration uses (Hook.drive_steps / begin_step(mode, step=) /
take_stop_request / end_step / set_tokens / save_scalar(collection=)), through the real store."""
from __future__ import annotations

import numpy as np
import pytest

import tensortap as tt

TRAIN, EVAL, PREDICT = tt.modes.TRAIN, tt.modes.EVAL, tt.modes.PREDICT


def _hook(run, **kw):
    kw.setdefault("save_config", tt.SaveConfig(save_interval=1))
    hook = tt.Hook(run, include_collections=["losses", "metrics", "attention", tt.Collection("x", ["^x$"])], **kw)
    hook.drive_steps()
    return hook


def test_trainer_numbers_are_mode_steps_and_global_steps_stay_unique_and_increasing(run_dir):
    hook = _hook(run_dir)
    plan = [(TRAIN, 0), (TRAIN, 1), (EVAL, None), (EVAL, None), (TRAIN, 2), (PREDICT, None), (TRAIN, 3)]
    for mode, n in plan:
        hook.begin_step(mode, step=n)
        hook.save_tensor("x", np.float32(hook.step), collections=["x"])
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.steps(mode=TRAIN) == [0, 1, 2, 3]
    assert trial.steps(mode=EVAL) == [0, 1] and trial.steps(mode=PREDICT) == [0]
    assert trial.steps() == list(range(7))                      # every step of every mode, once, in order
    assert [str(trial.mode(g)) for g in trial.steps()] == ["train", "train", "eval", "eval", "train", "predict",
                                                            "train"]
    assert float(trial.tensor("x").value(3, mode=TRAIN)) == 6  # trainer step 3 is global step 6


def test_a_run_of_one_mode_keeps_the_callers_numbers_globally_from_a_resumed_start(run_dir):
    hook = _hook(run_dir)
    for n in (500, 501, 502):       # resumed from a checkpoint at global_step 500
        hook.begin_step(TRAIN, step=n)
        hook.save_tensor("x", np.float32(n), collections=["x"])
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.steps() == trial.steps(mode=TRAIN) == [500, 501, 502]


def test_a_number_that_does_not_grow_is_reported_and_renumbered_not_overwritten(run_dir):
    hook = _hook(run_dir)
    for n, v in ((0, 1.0), (1, 2.0), (0, 3.0)):   # e.g. trainer.train() called a second time on one hook
        hook.begin_step(TRAIN, step=n)
        hook.save_tensor("x", np.float32(v), collections=["x"])
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.steps(mode=TRAIN) == [0, 1, 2]
    assert [float(trial.tensor("x").value(s, mode=TRAIN)) for s in (0, 1, 2)] == [1.0, 2.0, 3.0]
    assert any("is not after its step 1" in e for e in hook.errors)


def test_the_same_number_again_continues_the_step(run_dir):
    hook = _hook(run_dir)
    hook.begin_step(TRAIN, step=0)
    hook.save_tensor("x", np.float32(1), collections=["x"])
    hook.begin_step(TRAIN, step=0)     # the next micro-batch of gradient accumulation
    hook.save_scalar("loss", 0.5, collection="losses")
    hook.begin_step(TRAIN, step=1)
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0] and trial.tensor("loss").steps() == [0] and trial.tensor("x").steps() == [0]


def test_a_driver_takes_stop_requests_itself_begin_step_does_not_raise(run_dir):
    hook = _hook(run_dir)
    hook.begin_step(TRAIN, step=0)
    hook.save_tensor("x", np.float32(0), collections=["x"])
    hook.request_stop("rule x fired")
    hook.begin_step(TRAIN, step=1)                 # no tt.StopTraining: the driver decides
    assert hook.take_stop_request() == "rule x fired"
    assert hook.take_stop_request() is None        # taken once
    hook.close()
    assert any(e.get("event") == "stop_requested" for e in tt.create_trial(run_dir).events())


def test_without_a_driver_a_stop_request_still_raises_at_the_next_step(run_dir):
    hook = tt.Hook(run_dir, include_collections=["losses"])
    hook.begin_step(TRAIN)
    hook.request_stop("rule x fired")
    with pytest.raises(tt.StopTraining, match="rule x fired"):
        hook.begin_step(TRAIN)
    hook.close()


def test_between_driven_steps_nothing_is_captured(run_dir):
    hook = _hook(run_dir, save_config=tt.SaveConfig(save_interval=1))
    hook.begin_step(EVAL)
    hook.save_tensor("x", np.float32(1), collections=["x"])
    hook.end_step()                                   # e.g. Lightning's sanity check runs now
    assert not hook.saving and not hook.wants("x")
    hook.save_tensor("x", np.float32(2), collections=["x"])
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.steps() == [0] and float(trial.tensor("x").value(0)) == 1


def test_logged_values_are_saved_when_logged_whatever_the_interval_in_their_collection(run_dir):
    hook = _hook(run_dir, save_config=tt.SaveConfig(save_interval=100))
    for n in range(3):
        hook.begin_step(TRAIN, step=n)
        hook.save_tensor("x", np.float32(n), collections=["x"])   # follows the interval: step 0 only
        hook.save_scalar("loss", 1.0 / (n + 1), collection="losses")
        hook.save_scalar("accuracy", 0.5, collection="metrics")
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.tensor("x").steps() == [0]
    assert trial.tensor("loss").steps() == [0, 1, 2] and trial.tensor_names(collection="losses") == ["loss"]
    assert trial.tensor_names(collection="metrics") == ["accuracy"]


def test_tokens_go_beside_attention_on_steps_that_save_it(run_dir):
    never = tt.SaveConfigMode(start_step=10 ** 9)
    att = tt.Collection("attention", save_config=tt.SaveConfig({TRAIN: never, PREDICT: never,
                                                                EVAL: tt.SaveConfigMode(save_interval=1)}))
    hook = tt.Hook(run_dir, include_collections=[att])
    hook.drive_steps()
    hook.set_tokens([["[CLS]", "red", "car"], ["[CLS]", "a"]])
    hook.begin_step(TRAIN, step=0)
    hook.begin_step(EVAL)
    hook.save_tensor("attention/layer0", np.full((2, 1, 3, 3), 1 / 3, np.float32), collections=["attention"])
    hook.close()
    trial = tt.create_trial(run_dir)
    assert trial.tensor("attention/tokens").steps() == [1]
    tok = trial.tensor("attention/tokens").value(1)
    assert tok.tolist() == [["[CLS]", "red", "car"], ["[CLS]", "a", ""]]


def test_drive_steps_refuses_global(run_dir):
    hook = tt.Hook(run_dir)
    with pytest.raises(tt.ConfigError, match="GLOBAL"):
        hook.drive_steps([tt.modes.GLOBAL])
    with pytest.raises(tt.ConfigError, match="unknown mode"):
        hook.drive_steps(["training"])
    hook.drive_steps([])
    assert not hook.is_driven(TRAIN)
    hook.close()
