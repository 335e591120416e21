"""LightningCallback: the Lightning Trainer drives the hook. Real lightning, a small module."""
from tests.conftest import require

require("torch", "lightning")

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tensortap as tt  # noqa: E402
from tests.gloo_exit import ATTEMPTS, launch_retrying_exit_abort  # noqa: E402
from tensortap_torch.integrations import LightningCallback  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import lightning as L  # noqa: E402

from integration_checks import StopsAtTrainStep2, assert_applied_gradients, assert_steps, run_bounded  # noqa: E402,E501
from pl_setup import Net, loader, trainer  # noqa: E402

torch.set_num_threads(1)
TRAIN, EVAL, PREDICT = tt.modes.TRAIN, tt.modes.EVAL, tt.modes.PREDICT


class Weights(L.Callback):
    """The test's own record, outside tensortap: the weights before training and after each optimizer step."""

    def on_fit_start(self, trainer, pl_module):
        self.after = [{n: p.detach().clone() for n, p in pl_module.named_parameters()}]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == len(self.after):
            self.after.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


def test_optimizer_steps_clipped_accumulated_gradients_modes_and_logged_values(tmp_path):
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["weights", "biases", "gradients", "losses", "metrics"],
                   save_config=tt.SaveConfig(save_interval=1))
    model, weights = Net(), Weights()
    tr = trainer([LightningCallback(hook), weights], max_steps=3, accumulate_grad_batches=2, gradient_clip_val=0.05,
                 val_check_interval=4, limit_val_batches=2, num_sanity_val_steps=2)
    tr.fit(model, loader(24, 1), loader(8, 2))     # the sanity check runs 2 validation batches first
    tr.test(model, loader(8, 3), verbose=False)
    tr.predict(model, loader(8, 4))
    hook.close()
    trial = tt.create_trial(str(tmp_path / "run"))

    # one step per optimizer step (2 micro-batches each), numbered as global_step; validation after
    # 4 batches (step 2), test and predict: the sanity check's 2 batches count no step
    assert_steps(trial, "train train eval eval train eval eval predict predict")
    # the gradient saved at step g is what the optimizer applied (SGD, lr 1): accumulated and clipped
    assert_applied_gradients(trial, weights.after, range(3), max_norm=0.05)
    # what the module logged, where and when it was logged; nothing from the sanity check
    assert trial.tensor("train_loss").steps(mode=TRAIN) == [0, 1, 2]
    assert trial.tensor("val_loss").steps(mode=EVAL) == [0, 1, 2, 3]
    assert set(trial.tensor_names(collection="losses")) == {"train_loss", "val_loss"}
    assert trial.tensor_names(collection="metrics") == ["val_acc"]
    x, y = next(iter(loader(8, 3)))
    with torch.no_grad():
        test_loss = torch.nn.functional.cross_entropy(model(x), y)
    assert float(trial.tensor("val_loss").value(2, mode=EVAL)) == pytest.approx(float(test_loss), rel=1e-6)


def test_a_rules_stop_sets_should_stop_training_ends_cleanly(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TENSORTAP_LIVE_RULES", "thread")
    hook = tt.Hook(str(tmp_path / "run"), include_collections=["losses"], save_config=tt.SaveConfig(save_interval=1))
    hook.add_rule(StopsAtTrainStep2(), action="stop_training")
    tr = trainer([LightningCallback(hook)], max_steps=500, max_epochs=100)
    with caplog.at_level(logging.WARNING, logger="tensortap"):
        tr.fit(Net(lr=0.01), loader(64, 1))                    # returns: no exception
    hook.close()
    assert 2 < tr.global_step < 500 and tr.should_stop
    assert any("stopping training after step" in r.getMessage() for r in caplog.records)


SCRIPT = os.path.join(os.path.dirname(__file__), "pl_ddp_script.py")


def test_ddp_on_cpu_two_processes_give_one_worker_per_rank(tmp_path):
    outs = [str(tmp_path / f"run{a}") for a in range(ATTEMPTS)]
    attempt, code, log = launch_retrying_exit_abort(
        lambda a: run_bounded([sys.executable, SCRIPT, outs[a]], dict(os.environ), timeout=300, cwd=str(tmp_path)))
    assert code == 0, log[-6000:]
    out = outs[attempt]
    trial = tt.create_trial(out)
    assert trial.workers() == ["worker-0", "worker-1"]
    for w in trial.workers():
        assert trial.steps(mode=TRAIN, worker=w) == [0, 1, 2]
        assert trial.steps(mode=EVAL, worker=w) == [0]          # one validation batch per rank; no sanity check
    g0, g1 = (trial.tensor("gradients/net.2.weight").value(1, mode=TRAIN, worker=w) for w in trial.workers())
    np.testing.assert_allclose(g0, g1, rtol=1e-6)                # all-reduced: what each rank's optimizer applies
    l0, l1 = (float(trial.tensor("train_loss").value(1, mode=TRAIN, worker=w)) for w in trial.workers())
    assert l0 != l1                                              # each rank's own batch
