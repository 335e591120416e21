"""`tensortap run` on Hugging Face and Lightning Trainer scripts.

- With tensortap_torch.integrations (the default): the instrumentation injects TransformersCallback /
  LightningCallback, and the run is the same (steps, modes, names, values bit-exact, the same hooks on
  the model) as the same script with the callback written into it; steps are the trainer's global
  steps, evaluation is EVAL, and nothing else of tensortap (the optimizer path, loss modules, backward
  values) touches the model or saves a loss.
- The plain-loop path (TENSORTAP_RUN_INTEGRATIONS=0, or where the integrations are absent): the
  trainer's model is found from the optimizer it builds and steps at its optimizer steps."""
from __future__ import annotations

import importlib.util
import sys

import pytest

import tensortap as tt
from test_zero_code import assert_same_run, run, tensortap_run, write

CONFIG = """\
include_collections = ["weights", "gradients", "losses", "metrics"]
[save_config]
save_interval = 1
"""

# the twin (TWIN_OUT set) is the same script with the callback written into it; both print the
# forward hooks on the model and the step hooks on the optimizer after training
HF_SCRIPT = """\
import os, sys
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

EXPLICIT = os.environ.get("TWIN_OUT")
torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32, num_labels=2))
g = torch.Generator().manual_seed(1)
data = [{"input_ids": torch.randint(0, 40, (6,), generator=g), "attention_mask": torch.ones(6, dtype=torch.long),
         "labels": torch.tensor(i % 2)} for i in range(40)]
args = TrainingArguments(output_dir=sys.argv[1], max_steps=4, per_device_train_batch_size=4,
                         gradient_accumulation_steps=2, per_device_eval_batch_size=4, eval_strategy="steps",
                         eval_steps=2, logging_steps=2, save_strategy="no", report_to=[], use_cpu=True,
                         disable_tqdm=True)
callbacks = []
if EXPLICIT:
    import tensortap as tt
    from tensortap_torch.integrations import TransformersCallback
    hook = tt.Hook(EXPLICIT, include_collections=["weights", "gradients", "losses", "metrics"],
                   save_config=tt.SaveConfig(save_interval=1))
    callbacks = [TransformersCallback(hook)]
trainer = Trainer(model=model, args=args, train_dataset=data[:32], eval_dataset=data[32:], callbacks=callbacks)
trainer.train()
opt = trainer.optimizer.optimizer
print("HOOKS", sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()),
      len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks))
if EXPLICIT:
    hook.close()
"""


def _hooks_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("HOOKS "))


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_hugging_face_trainer_gets_the_callback_and_the_same_run_as_written_in(tmp_path):
    script = write(tmp_path, "hf.py", HF_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", CONFIG)
    zero, twin = str(tmp_path / "zero"), str(tmp_path / "twin")
    r = tensortap_run("--config", cfg, "--out", zero, "--", sys.executable, script, str(tmp_path / "hf_zero"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BertForSequenceClassification (transformers.Trainer, TransformersCallback)" in r.stderr
    assert "is not instrumented" not in r.stderr and "could not" not in r.stderr
    t = run([sys.executable, script, str(tmp_path / "hf_twin")], env={"TWIN_OUT": twin})
    assert t.returncode == 0, t.stderr[-3000:]
    assert _hooks_line(r.stdout) == _hooks_line(t.stdout)  # one adapter's hooks, none on the optimizer
    assert _hooks_line(r.stdout).endswith(" 0")
    assert_same_run(zero, twin, clock=r"_runtime$|_per_second$")
    trial = tt.create_trial(zero)
    assert trial.steps(mode=tt.modes.TRAIN) == [0, 1, 2, 3]  # the trainer's global steps (2 micro-batches each)
    assert trial.steps(mode=tt.modes.EVAL) == [0, 1, 2, 3]   # two evaluations of two batches
    # the losses are what the trainer logged (every 2 steps; the run's mean at the end), saved once: no
    # backward value, no loss module
    assert trial.tensor_names(collection="losses") == ["eval_loss", "loss", "train_loss"]
    assert trial.tensor("loss").steps(mode=tt.modes.TRAIN) == [1, 3]


LIGHTNING_SCRIPT = """\
import os
import torch
import lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPLICIT = os.environ.get("TWIN_OUT")


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
        self.crit = nn.CrossEntropyLoss()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        loss = self.crit(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, i):
        self.log("val_loss", self.crit(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
ds = TensorDataset(torch.randn(64, 6), torch.randint(0, 2, (64,)))
callbacks = []
if EXPLICIT:
    import tensortap as tt
    from tensortap_torch.integrations import LightningCallback
    hook = tt.Hook(EXPLICIT, include_collections=["weights", "gradients", "losses", "metrics"],
                   save_config=tt.SaveConfig(save_interval=1))
    callbacks = [LightningCallback(hook)]
model = Classifier()
trainer = L.Trainer(max_steps=4, accumulate_grad_batches=2, limit_val_batches=2, num_sanity_val_steps=1,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    accelerator="cpu", callbacks=callbacks)
trainer.fit(model, DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=8))
opt = trainer.optimizers[0]
print("HOOKS", sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()),
      len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks))
if EXPLICIT:
    hook.close()
"""


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning is not installed")
def test_lightning_trainer_gets_the_callback_and_the_same_run_as_written_in(tmp_path):
    script = write(tmp_path, "pl.py", LIGHTNING_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", CONFIG)
    zero, twin = str(tmp_path / "zero"), str(tmp_path / "twin")
    r = tensortap_run("--config", cfg, "--out", zero, "--", sys.executable, script)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Classifier (lightning.Trainer, LightningCallback)" in r.stderr
    assert "is not instrumented" not in r.stderr and "could not" not in r.stderr
    t = run([sys.executable, script], env={"TWIN_OUT": twin})
    assert t.returncode == 0, t.stderr[-3000:]
    assert _hooks_line(r.stdout) == _hooks_line(t.stdout)  # one adapter's hooks, none on the optimizer
    assert _hooks_line(r.stdout).endswith(" 0")
    assert_same_run(zero, twin)
    trial = tt.create_trial(zero)
    assert trial.steps(mode=tt.modes.TRAIN) == [0, 1, 2, 3]  # trainer.global_step (2 micro-batches each)
    assert trial.steps(mode=tt.modes.EVAL) == [0, 1]         # the epoch's validation; the sanity check: none
    # the losses are what the module logged, saved once: the loss module (self.crit) is not registered
    assert trial.tensor_names(collection="losses") == ["train_loss", "val_loss"]


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_hugging_face_trainer_plain_loop_path(tmp_path):
    script = write(tmp_path, "hf.py", HF_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", CONFIG)
    out = str(tmp_path / "run")
    r = tensortap_run("--config", cfg, "--out", out, "--", sys.executable, script, str(tmp_path / "hf_out"),
                      env={"TENSORTAP_RUN_INTEGRATIONS": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BertForSequenceClassification (the parameters of AdamW)" in r.stderr
    trial = tt.create_trial(out)
    assert trial.steps(mode=tt.modes.TRAIN) == [0, 1, 2, 3]  # its optimizer steps (2 micro-batches each)
    assert trial.steps(mode=tt.modes.EVAL) == [0, 1, 2, 3]   # evaluation forwards
    assert "bert.embeddings.word_embeddings.weight" in trial.tensor_names()
    assert trial.tensor("gradients/classifier.weight").steps(mode=tt.modes.TRAIN) == [0, 1, 2, 3]
    assert trial.tensor("loss").steps(mode=tt.modes.TRAIN) == [0, 1, 2, 3]  # the value backward() is called on


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning is not installed")
def test_lightning_trainer_plain_loop_path(tmp_path):
    script = write(tmp_path, "pl.py", LIGHTNING_SCRIPT)
    cfg = write(tmp_path, "tensortap.toml", CONFIG)
    out = str(tmp_path / "run")
    r = tensortap_run("--config", cfg, "--out", out, "--", sys.executable, script,
                      env={"TENSORTAP_RUN_INTEGRATIONS": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Classifier (the parameters of SGD)" in r.stderr
    trial = tt.create_trial(out)
    # its optimizer steps; the gradients are taken inside Lightning's optimizer closure, once it has run
    assert trial.steps(mode=tt.modes.TRAIN) == [0, 1, 2, 3]
    assert trial.tensor("gradients/net.2.bias").steps(mode=tt.modes.TRAIN) == [0, 1, 2, 3]
    assert trial.steps(mode=tt.modes.EVAL) == [0, 1, 2]  # here the sanity check's batch is an EVAL step too
    assert {"net.0.weight", "loss"} <= set(trial.tensor_names())  # the loss module self.crit
