"""BERT attention while fine-tuning (GluonNLP BERT on MXNet): a small BERT learns a generated task
whose answer sits in one token, and tensortap captures every layer's attention with the token
strings; the `attention` visualizer writes a head view of the first 20 tokens, animated over
10 capture points, as one offline HTML file (plus a PNG grid of the last one).

The task: a sentence of filler words holds exactly one colour word (red, green, blue) somewhere;
the label is that colour. To answer, [CLS] (whose pooled state the classifier reads) must gather
information from one position, so the attention has something to learn. Nothing is downloaded:
the vocabulary and the model (2 layers, 4 heads, random init) are made here.

    python examples/bert_attention/train_bert.py --quick
    python examples/bert_attention/train_bert.py
Outputs: <out>/run, attention.html (animated head view), attention.png, summary.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

import tensortap as tt  # noqa: E402

from common.colour_task import COLOURS, FILLER, cls_attention_on_colour  # noqa: E402
from common.saving import eval_steps_only, every_step  # noqa: E402

PRESETS = {"quick": dict(steps=240, probe_every=24, units=32, hidden=64, n_test=300),
           "full": dict(steps=1500, probe_every=150, units=64, hidden=128, n_test=1000)}
SEQ, HEADS, LAYERS, BATCH = 24, 4, 2, 32
VOCAB = ("[PAD]", "[CLS]", "[SEP]") + FILLER + COLOURS


def make_sentences(n: int, rng: np.random.Generator):
    """(token ids (n, SEQ), valid lengths (n,), labels (n,), colour positions (n,))."""
    ids = np.zeros((n, SEQ), np.int64)
    valid = rng.integers(12, SEQ + 1, n)
    labels = rng.integers(0, len(COLOURS), n)
    pos = np.empty(n, np.int64)
    for i in range(n):
        body = rng.integers(3, 3 + len(FILLER), valid[i] - 2)
        pos[i] = 1 + rng.integers(0, valid[i] - 2)
        body[pos[i] - 1] = 3 + len(FILLER) + labels[i]
        ids[i, 0], ids[i, 1:valid[i] - 1], ids[i, valid[i] - 1] = 1, body, 2
    return ids, valid, labels, pos


def build(units: int, hidden: int):
    import mxnet as mx
    from gluonnlp.model import BERTEncoder, BERTModel
    from mxnet import gluon

    class Classifier(gluon.HybridBlock):
        def __init__(self):
            super().__init__(prefix="clf_")
            with self.name_scope():
                enc = BERTEncoder(num_layers=LAYERS, units=units, hidden_size=hidden, max_length=SEQ, num_heads=HEADS,
                                  dropout=0.1, prefix="bert_enc_")
                self.bert = BERTModel(enc, vocab_size=len(VOCAB), token_type_vocab_size=2, units=units,
                                      embed_size=units, use_pooler=True, use_decoder=False, use_classifier=False,
                                      prefix="bert_")
                self.out = gluon.nn.Dense(len(COLOURS), in_units=units, prefix="out_")

        def hybrid_forward(self, F, ids, types, valid):
            _, pooled = self.bert(ids, types, valid)
            return self.out(pooled)

    model = Classifier()
    model.initialize(mx.init.Normal(0.02))
    model.hybridize()
    return model


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/bert_attention")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = PRESETS["quick" if args.quick else "full"]
    import mxnet as mx
    from mxnet import autograd, gluon

    import tensortap_mxnet

    mx.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    te_ids, te_valid, te_y, te_pos = make_sentences(cfg["n_test"], np.random.default_rng(args.seed + 1))
    probe = slice(0, 4)
    run = os.path.join(args.out, "run")
    if os.path.exists(os.path.join(run, "workers")):
        shutil.rmtree(run)
    model = build(cfg["units"], cfg["hidden"])
    hook = tt.Hook(run, include_collections=["losses", eval_steps_only("attention"),
                                             every_step("probe", ["^heldout_accuracy$"], ["scalars"])],
                   save_config=tt.SaveConfig(save_interval=10))
    hook.register(model)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    hook.register_loss(loss_fn)
    trainer = gluon.Trainer(model.collect_params(), "adam", {"learning_rate": 1e-3})
    nd = lambda a: mx.nd.array(a, dtype="float32")  # noqa: E731
    types = lambda n: mx.nd.zeros((n, SEQ))  # noqa: E731

    def probe_pass() -> None:
        """One EVAL forward of 4 fixed held-out sentences: attention and tokens saved at this step."""
        tensortap_mxnet.set_tokens(hook, [[VOCAB[i] for i in row] for row in te_ids[probe]])
        model(nd(te_ids[probe]), types(4), nd(te_valid[probe])).wait_to_read()

    def accuracy() -> float:
        hook.set_mode(tt.modes.PREDICT)  # not a probe pass
        pred = model(nd(te_ids), types(len(te_ids)), nd(te_valid)).asnumpy().argmax(1)
        hook.set_mode(None)
        return float((pred == te_y).mean())

    t0, losses, accs = time.time(), [], []
    probe_pass()
    for step in range(1, cfg["steps"] + 1):
        ids, valid, y, _ = make_sentences(BATCH, rng)
        with autograd.record():
            loss = loss_fn(model(nd(ids), types(BATCH), nd(valid)), nd(y)).mean()
        loss.backward()
        trainer.step(1)
        losses.append(float(loss.asscalar()))
        if step % cfg["probe_every"] == 0:
            probe_pass()
            accs.append(accuracy())
            hook.save_scalar("heldout_accuracy", accs[-1])
            print(f"step {step}: loss {np.mean(losses[-cfg['probe_every']:]):.3f}, held-out accuracy {accs[-1]:.3f}",
                  flush=True)
    hook.close()
    train_seconds = time.time() - t0

    trial = tt.create_trial(run)
    layers = sorted(n for n in trial.tensor_names(collection="attention") if n != "attention/tokens")
    vis = tt.vis.get("attention")()
    html = str(vis.render(trial, os.path.join(args.out, "attention.html"), max_tokens=20, max_steps=10, max_examples=2,
                          title="BERT attention while fine-tuning (colour-word task)"))
    png = str(vis.render(trial, os.path.join(args.out, "attention.png"), max_tokens=20, example=0))
    focus = cls_attention_on_colour(trial, layers[-1], te_pos[probe], te_valid[probe])
    s = {"quick": args.quick, "run": run, "html": html, "png": png, "layers": layers,
         "captures": len(trial.tensor(layers[0]).steps()), "first_loss": float(np.mean(losses[:20])),
         "last_loss": float(np.mean(losses[-20:])), "heldout_accuracy": accs, "chance": 1 / len(COLOURS),
         "cls_attention_on_colour_last_layer": focus, "train_seconds": train_seconds}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    print(f"loss {s['first_loss']:.3f} -> {s['last_loss']:.3f}; held-out accuracy {accs[-1]:.3f} (chance 0.333); "
          f"[CLS] attention on the colour word (last layer) {focus['first']:.3f} -> {focus['last']:.3f} "
          f"(uniform {focus['uniform']:.3f}); {html} {png}")
    return s


if __name__ == "__main__":
    main()
