"""A tiny BERT classifier, a tokenizer and a generated text data set for the HF Trainer tests
(also run by hf_ddp_worker.py under torchrun)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import transformers as T  # noqa: E402

from hf_models import VOCAB, config, tokenizer  # noqa: E402


class Texts(torch.utils.data.Dataset):
    """n tokenized sentences of 3-8 words; the label is whether word w4 occurs."""

    def __init__(self, tok, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        words = VOCAB[4:]
        self.texts, self.labels = [], []
        for _ in range(n):
            k = int(torch.randint(3, 9, (1,), generator=g))
            idx = torch.randint(0, len(words), (k,), generator=g).tolist()
            self.texts.append(" ".join(words[i] for i in idx))
            self.labels.append(int(0 in idx))
        self.enc = tok(self.texts)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                "labels": self.labels[i]}


def classifier() -> T.BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = config("bert")
    cfg.num_labels = 2
    return T.BertForSequenceClassification(cfg)


def training_args(out: str, **kw) -> T.TrainingArguments:
    base = dict(per_device_train_batch_size=4, per_device_eval_batch_size=4, optim="sgd", learning_rate=1.0,
                lr_scheduler_type="constant", weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[],
                use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    base.update(kw)
    return T.TrainingArguments(out, **base)


__all__ = ["Texts", "classifier", "training_args", "tokenizer"]
