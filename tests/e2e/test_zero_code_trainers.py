"""`tensortap run` on Hugging Face and Lightning Trainer scripts through the plain-loop path (what
runs where tensortap_torch.integrations' callbacks are absent, or TENSORTAP_RUN_INTEGRATIONS=0):
the trainer's model is found from the optimizer it builds, and every training forward is a step."""
from __future__ import annotations

import importlib.util
import sys

import pytest

import tensortap as tt
from test_zero_code import tensortap_run, write

CONFIG = 'include_collections = ["weights", "gradients", "losses"]\n[save_config]\nsave_interval = 1\n'

HF_SCRIPT = """\
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32, num_labels=2))
g = torch.Generator().manual_seed(1)
data = [{"input_ids": torch.randint(0, 40, (6,), generator=g), "attention_mask": torch.ones(6, dtype=torch.long),
         "labels": torch.tensor(i % 2)} for i in range(16)]
args = TrainingArguments(output_dir=__import__("sys").argv[1], max_steps=4, per_device_train_batch_size=4,
                         save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="no")
Trainer(model=model, args=args, train_dataset=data).train()
"""

LIGHTNING_SCRIPT = """\
import torch
import lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
ds = TensorDataset(torch.randn(32, 6), torch.randint(0, 2, (32,)))
L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
          enable_model_summary=False, accelerator="cpu").fit(Classifier(), DataLoader(ds, batch_size=8))
"""


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
    assert trial.steps() == [0, 1, 2, 3]
    assert "bert.embeddings.word_embeddings.weight" in trial.tensor_names()
    assert "gradients/classifier.weight" in trial.tensor_names() and trial.tensor("loss").steps() == [0, 1, 2, 3]


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
    assert trial.steps() == [0, 1, 2, 3]
    assert {"net.0.weight", "gradients/net.2.bias", "loss"} <= set(trial.tensor_names())
