"""BERT attention while fine-tuning with the Hugging Face Trainer: a tiny BERT (random init) learns a
generated task whose answer sits in one token, and tensortap's TransformersCallback captures every
layer's attention with the token strings; the `attention` visualizer writes a head view over the
training steps (one offline HTML file, plus a PNG grid of the last capture) and `build_report` the
run's report.

The task: a sentence of filler words holds exactly one colour word (red, green, blue) somewhere; the
label is that colour. To answer, [CLS] (whose pooled state the classifier reads) must gather it from
one position, so the attention has something to learn. Nothing is downloaded: the vocabulary, the
WordLevel tokenizer (built with `tokenizers`) and the model (2 layers, 4 heads, the default SDPA
attention) are made here.

    python examples/hf_bert/train_bert.py --quick
    python examples/hf_bert/train_bert.py
Outputs: <out>/run, attention.html (head view over steps), attention.png, report.html, summary.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is made here; never reach for the Hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import tensortap as tt  # noqa: E402

from common.colour_task import COLOURS, FILLER, cls_attention_on_colour  # noqa: E402

PRESETS = {"quick": dict(steps=150, evals=6, hidden=32, n_train=3200),
           "full": dict(steps=1200, evals=12, hidden=64, n_train=20000)}
SEQ, HEADS, LAYERS, BATCH, EVAL_BATCH, N_EVAL = 24, 4, 2, 32, 32, 128
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def make_sentences(n: int, rng: np.random.Generator):
    """(sentences as text, labels, position of the colour word counting [CLS] as 0)."""
    texts, labels, pos = [], rng.integers(0, len(COLOURS), n), np.empty(n, np.int64)
    for i in range(n):
        words = list(rng.choice(FILLER, int(rng.integers(10, SEQ - 1))))
        k = int(rng.integers(0, len(words)))
        words[k] = COLOURS[labels[i]]
        texts.append(" ".join(words))
        pos[i] = k + 1
    return texts, labels, pos


def make_tokenizer():
    """A WordLevel tokenizer over the generated vocabulary: [CLS] text [SEP], padded per batch."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + FILLER + COLOURS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=SEQ)


class Sentences:
    """A map-style data set of tokenized sentences (what the Trainer's data collator pads)."""

    def __init__(self, tokenizer, texts, labels) -> None:
        self.enc = tokenizer(list(texts))
        self.labels = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                "labels": self.labels[i]}


def make_hook(run: str) -> tt.Hook:
    """Losses and metrics as the Trainer logs them; attention only at the first batch of each
    evaluation (EVAL steps 0, 4, 8, ...: the same probe sentences every time)."""
    never = tt.SaveConfigMode(start_step=2 ** 62)
    first_eval_batch = tt.SaveConfigMode(save_interval=N_EVAL // EVAL_BATCH)
    attention = tt.Collection("attention", save_config=tt.SaveConfig(
        {tt.modes.TRAIN: never, tt.modes.PREDICT: never, tt.modes.EVAL: first_eval_batch}))
    return tt.Hook(run, include_collections=["losses", "metrics", attention])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/hf_bert")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    args = ap.parse_args(argv)
    cfg = PRESETS["quick" if args.quick else "full"]
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from tensortap.report import build_report
    from tensortap_torch.integrations import TransformersCallback

    torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    tokenizer = make_tokenizer()
    tr_text, tr_y, _ = make_sentences(cfg["n_train"], np.random.default_rng(args.seed))
    ev_text, ev_y, ev_pos = make_sentences(N_EVAL, np.random.default_rng(args.seed + 1))
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=cfg["hidden"], num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=2 * cfg["hidden"], max_position_embeddings=SEQ + 8, num_labels=len(COLOURS)))

    run = os.path.join(args.out, "run")
    if os.path.exists(os.path.join(run, "workers")):
        shutil.rmtree(run)
    hook = make_hook(run)

    def accuracy(p) -> dict:
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    targs = TrainingArguments(
        os.path.join(args.out, "trainer"), max_steps=cfg["steps"], per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=EVAL_BATCH, learning_rate=2e-3, warmup_steps=10, weight_decay=0.0,
        eval_strategy="steps", eval_steps=cfg["steps"] // cfg["evals"], eval_on_start=True,
        logging_steps=max(1, cfg["steps"] // 30), save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=Sentences(tokenizer, tr_text, tr_y),
                      eval_dataset=Sentences(tokenizer, ev_text, ev_y), processing_class=tokenizer,
                      compute_metrics=accuracy, callbacks=[TransformersCallback(hook)])
    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0
    hook.close()

    trial = tt.create_trial(run)
    layers = sorted(n for n in trial.tensor_names(collection="attention") if n != "attention/tokens")
    vis = tt.vis.get("attention")()
    html = str(vis.render(trial, os.path.join(args.out, "attention.html"), max_tokens=20, max_steps=12,
                          max_examples=2, title="BERT attention while fine-tuning (HF Trainer, colour-word task)"))
    png = str(vis.render(trial, os.path.join(args.out, "attention.png"), max_tokens=20, example=0))
    report = str(build_report(trial, os.path.join(args.out, "report.html"), title="hf_bert"))
    first = trial.tensor(layers[-1]).steps()[0]
    valid = (np.asarray(trial.tensor("attention/tokens").value(first))[:4] != "[PAD]").sum(1)
    focus = cls_attention_on_colour(trial, layers[-1], ev_pos[:4], valid)
    loss = trial.tensor("loss")
    accs = [float(trial.tensor("eval_accuracy").value(s)) for s in trial.tensor("eval_accuracy").steps()]
    s = {"quick": args.quick, "run": run, "html": html, "png": png, "report": report, "layers": layers,
         "captures": len(trial.tensor(layers[0]).steps()), "first_loss": float(loss.value(loss.steps()[0])),
         "last_loss": float(loss.value(loss.steps()[-1])), "eval_accuracy": accs, "chance": 1 / len(COLOURS),
         "train_steps": trial.steps(mode=tt.modes.TRAIN)[-1] + 1 if trial.steps(mode=tt.modes.TRAIN) else 0,
         "cls_attention_on_colour_last_layer": focus, "train_seconds": train_seconds}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    print(f"logged loss {s['first_loss']:.3f} -> {s['last_loss']:.3f}; eval accuracy {accs[0]:.3f} -> {accs[-1]:.3f} "
          f"(chance 0.333); [CLS] attention on the colour word (last layer) {focus['first']:.3f} -> "
          f"{focus['last']:.3f} (uniform {focus['uniform']:.3f}); {train_seconds:.0f}s of training")
    print(f"head view: {html}\nreport: {report}")
    return s


if __name__ == "__main__":
    main()
