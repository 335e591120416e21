"""Iterative filter pruning of a ResNet-style and an AlexNet-style CNN, driven by tensortap.

Each iteration: fine-tune with a tt.Hook that computes, as it captures, the Taylor importance
(Molchanov et al. 2017) of every channel of the ReLU feature maps (one small vector per layer
per saved step, from the feature map and its gradient), rank filters by it, remove the least
important filters (residual channel groups stay aligned), rebuild the optimizer, and record
parameters / size / held-out accuracy. The `pruning_accuracy` rule stops the loop (action
"stop_training") once accuracy falls below --min-accuracy.

    python examples/pruning/prune.py --quick                 # well under a minute
    python examples/pruning/prune.py --model resnet          # full run
    python examples/pruning/prune.py --quick --compare-capture   # also the old capture (whole feature
                                                             # maps and gradients): bytes of both runs
Outputs: <out>/<model>/ (the run), <out>/<model>_pruning.png, <out>/summary.json;
`tensortap serve <out>` compares the models' runs (accuracy against parameters, per iteration).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import tensortap as tt  # noqa: E402
from tensortap_pruning import CRITERIA, TaylorPruner, count_params, size_mb  # noqa: E402

from common.digits import load_digits_images  # noqa: E402
from common.cnn import MODELS  # noqa: E402

PRESETS = {
    # width, epochs before pruning, fine-tune epochs per iteration, filters removed per iteration,
    # at most `iters` prunes, capture the tapped feature maps every `capture` training steps
    "quick": {"resnet": dict(width=8, blocks=1, epochs=5, finetune=1, per_iter=16, iters=5, capture=4),
              "alexnet": dict(width=12, epochs=5, finetune=1, per_iter=16, iters=5, capture=4)},
    "full": {"resnet": dict(width=16, blocks=2, epochs=15, finetune=2, per_iter=16, iters=30, capture=8),
             "alexnet": dict(width=32, epochs=15, finetune=2, per_iter=16, iters=30, capture=8)},
}


def batches(x: torch.Tensor, y: torch.Tensor, bs: int, rng: np.random.Generator):
    idx = rng.permutation(len(x))
    for i in range(0, len(x), bs):
        j = idx[i:i + bs]
        yield x[j], y[j]


def train_epochs(model: nn.Module, x, y, epochs: int, lr: float, rng, bs: int = 64, hook=None) -> list:
    """Plain training loop; the hook registered on the model captures through forward/backward."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)  # rebuilt every call: pruning replaces parameters
    model.train()
    losses = []
    for _ in range(epochs):
        for xb, yb in batches(x, y, bs, rng):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if hook is not None:
                hook.record_loss(loss.detach())
            losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + 256]).argmax(1) == y[i:i + 256]).sum()) for i in range(0, len(x), 256))
    return correct / len(x)


def run_bytes(path: str) -> int:
    """Bytes of every file of a run directory."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run_one(name: str, cfg: dict, out: str, min_accuracy: float, seed: int, log=print, criterion: str = "taylor",
            capture: str = "reductions", run_name: str = "") -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xtr, ytr, xte, yte = load_digits_images(size=16, seed=seed, shift=1)
    xtr, ytr, xte, yte = map(torch.from_numpy, (xtr, ytr, xte, yte))
    kw = {"width": cfg["width"]}
    if "blocks" in cfg:
        kw["blocks"] = cfg["blocks"]
    model = MODELS[name](num_classes=10, **kw)
    # 1. train the full model (no hook yet: nothing to rank)
    t0 = time.time()
    losses = train_epochs(model, xtr, ytr, cfg["epochs"], 3e-3, rng)
    acc0 = accuracy(model, xte, yte)
    log(f"[{name}] trained: {count_params(model):,} params, held-out accuracy {acc0:.3f} "
        f"(loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}, {time.time() - t0:.0f}s)")
    # 2. prune iteratively, the hook capturing what the Taylor criterion needs.
    # torch 2.13's CPU oneDNN kernels crashed ("double free or corruption") in the backward of some
    # pruned ResNet shapes (a stage-1 trunk under 8 channels) on this machine; the native kernels do not.
    torch.backends.mkldnn.enabled = False
    pruner = TaylorPruner(model, xtr[:8], filters_per_iteration=cfg["per_iter"], min_accuracy=min_accuracy,
                          capture_interval=cfg["capture"], criterion=criterion, capture=capture, seed=seed)
    run_dir = os.path.join(out, run_name or name)
    if os.path.exists(os.path.join(run_dir, "workers")):  # our own earlier run of this demo
        shutil.rmtree(run_dir)
    hook = pruner.make_hook(run_dir)

    def fine_tune(m):
        train_epochs(m, xtr, ytr, cfg["finetune"], 1e-3, rng, hook=hook)

    def evaluate(m):
        acc = accuracy(m, xte, yte)
        # beside pruning/params, size_mb and accuracy (TaylorPruner.record saves them at this step): the
        # iteration, an x axis every model's run shares in `tensortap serve`'s comparison
        hook.save_scalar("pruning/iteration", pruner.iteration)
        log(f"[{name}] iteration {pruner.iteration}: {count_params(m):,} params, {size_mb(m):.3f} MB, "
            f"held-out accuracy {acc:.3f}")
        return acc

    pruner.run(fine_tune, evaluate, max_iterations=cfg["iters"])
    hook.close()
    torch.backends.mkldnn.enabled = True
    log(f"[{name}] stopped: {pruner.stop_reason or 'max iterations reached'}")
    best = next((r for r in reversed(pruner.history) if r["accuracy"] >= min_accuracy), pruner.history[0])
    png = os.path.join(out, f"{name}_pruning.png")
    plot(run_dir, png, name, min_accuracy)
    return {"model": name, "run": run_dir, "plot": png, "initial_accuracy": acc0,
            "initial_loss": float(np.mean(losses[:5])),
            "final_loss": float(np.mean(losses[-5:])), "history": pruner.history, "stop_reason": pruner.stop_reason,
            "best": {k: best[k] for k in ("params", "size_mb", "accuracy", "iteration")},
            "removed": [s.removed for s in pruner.prune_steps], "channels": [s.channels for s in pruner.prune_steps],
            "capture": capture, "criterion": criterion, "run_bytes": run_bytes(run_dir)}


def plot(run_dir: str, png: str, title: str, min_accuracy: float) -> str:
    """Accuracy against parameter count: the `pruning` visualizer, or matplotlib if it is not installed."""
    if "pruning" in tt.vis.list():
        return tt.vis.get("pruning")().render(tt.create_trial(run_dir), png)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trial = tt.create_trial(run_dir)
    p, a = trial.tensor("pruning/params"), trial.tensor("pruning/accuracy")
    steps = sorted(set(p.steps()) & set(a.steps()))
    xs = [float(p.value(s)) for s in steps]
    ys = [float(a.value(s)) for s in steps]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
    ax.plot(xs, ys, "o-")
    ax.axhline(min_accuracy, color="r", ls="--", lw=1, label=f"floor {min_accuracy:g}")
    ax.invert_xaxis()
    ax.set(xlabel="parameters", ylabel="held-out accuracy", title=f"{title}: accuracy vs parameters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small models, few iterations (about a minute)")
    ap.add_argument("--model", choices=["resnet", "alexnet", "both"], default="both")
    ap.add_argument("--min-accuracy", type=float, default=None,
                    help="stop pruning below this (default 0.90, quick 0.85)")
    ap.add_argument("--out", default="runs/pruning")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--criterion", choices=list(CRITERIA), default="taylor", help="channel importance (default taylor)")
    ap.add_argument("--capture", choices=["reductions", "tensors"], default="reductions",
                    help="reductions: the importance computed while capturing (default); tensors: whole feature maps "
                         "and gradients stored, the criterion computed from them when ranking (taylor only)")
    ap.add_argument("--compare-capture", action="store_true",
                    help="run each model with both captures (same seed) and print the bytes of both runs and whether "
                         "they removed the same channels")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = PRESETS["quick" if args.quick else "full"]
    floor = args.min_accuracy if args.min_accuracy is not None else (0.85 if args.quick else 0.90)
    os.makedirs(args.out, exist_ok=True)
    names = ["resnet", "alexnet"] if args.model == "both" else [args.model]
    summary = {"quick": args.quick, "min_accuracy": floor, "criterion": args.criterion, "capture": args.capture,
               "results": [run_one(n, preset[n], args.out, floor, args.seed, criterion=args.criterion,
                                   capture=args.capture) for n in names]}
    if args.compare_capture:
        other = "tensors" if args.capture == "reductions" else "reductions"
        summary["compared"] = []
        for r in summary["results"]:
            o = run_one(r["model"], preset[r["model"]], args.out, floor, args.seed, criterion=args.criterion,
                        capture=other, run_name=f"{r['model']}-{other}")
            by = {r["capture"]: r, o["capture"]: o}
            same = o["channels"] == r["channels"] and [h["accuracy"] for h in o["history"]] == \
                [h["accuracy"] for h in r["history"]]
            row = {"model": r["model"], "bytes_tensors": by["tensors"]["run_bytes"],
                   "bytes_reductions": by["reductions"]["run_bytes"], "same_channels_removed": same}
            summary["compared"].append(row)
            print(f"{r['model']}: run bytes, whole tensors {row['bytes_tensors']:,} -> importance vectors "
                  f"{row['bytes_reductions']:,} ({row['bytes_tensors'] / row['bytes_reductions']:,.0f}x less); "
                  f"same channels removed at every iteration: {same}")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for r in summary["results"]:
        h0, b = r["history"][0], r["best"]
        print(f"{r['model']}: {h0['params']:,} -> {b['params']:,} params ({b['params'] / h0['params']:.0%}), "
              f"accuracy {h0['accuracy']:.3f} -> {b['accuracy']:.3f}; run {r['run_bytes']:,} bytes; plot {r['plot']}")
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    print(f"compare: tensortap serve {args.out}    (Compare runs: pruning/accuracy against pruning/params)")
    return summary


if __name__ == "__main__":
    main()
