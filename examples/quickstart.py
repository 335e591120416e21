"""The `make demo` job: train a small CNN on scikit-learn's digits with tensortap attached,
check it with rules while it trains, write an HTML report of the run, and print the
`tensortap serve` command that shows it live.

    python examples/quickstart.py --out runs/demo

Uses PyTorch when tensortap-torch is installed, else the numpy MLP from tensortap.testing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

import tensortap as tt


# Every 10th step of each mode (save_scalar, used for the accuracy, saves on every call).
SAVE = tt.SaveConfig(save_interval=10)


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    return x[idx[:1500]], y[idx[:1500]], x[idx[1500:]], y[idx[1500:]]


def rules():
    """The built-in rules worth watching on any run (those registered in this install)."""
    out = []
    for name, kwargs in [("loss_not_decreasing", {"num_steps": 20}), ("vanishing_gradient", {}),
                         ("exploding_tensor", {})]:
        if name in tt.rules.list():
            out.append(tt.rules.get(name)(**kwargs))
    return out


def train_torch(out: str, steps: int) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, 10),
    )
    hook = tt.Hook(out, include_collections=["weights", "biases", "gradients", "losses", "outputs", "scalars"],
                   save_config=SAVE)
    hook.register(model)
    for r in rules():
        hook.add_rule(r, action="log")
    loss_fn = nn.CrossEntropyLoss()
    hook.register_loss(loss_fn)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xtr, ytr, xte, yte = digits()
    rng = np.random.default_rng(1)
    for step in range(steps):
        model.train()
        i = rng.integers(0, len(xtr), 64)
        loss = loss_fn(model(torch.from_numpy(xtr[i])), torch.from_numpy(ytr[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            model.eval()  # an eval forward is an EVAL-mode step: it does not shift the TRAIN steps
            with torch.no_grad():
                acc = (model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean()
            model.train()
            hook.save_scalar("test_accuracy", float(acc))
    hook.close()


def train_numpy(out: str, steps: int) -> None:
    from tensortap.testing import NumpyMLP, use_numpy_adapter

    use_numpy_adapter()  # the numpy MLP's adapter is for tests and demos: no built-in
    xtr, ytr, xte, yte = digits()
    model = NumpyMLP(64, 32, 10, seed=0)
    hook = tt.Hook(out, include_collections=["weights", "biases", "gradients", "losses", "outputs", "scalars"],
                   save_config=SAVE)
    hook.register(model)
    hook.register_loss(model)
    for r in rules():
        hook.add_rule(r, action="log")
    rng = np.random.default_rng(1)
    for step in range(steps):
        i = rng.integers(0, len(xtr), 64)
        model.train_step(xtr[i].reshape(64, -1), ytr[i], lr=0.2)
        if step % 10 == 0:
            model.eval()
            acc = (model.forward(xte.reshape(len(xte), -1)).argmax(1) == yte).mean()
            model.train()
            hook.save_scalar("test_accuracy", float(acc))
    hook.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/demo", help="run directory (replaced if it exists)")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args(argv)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    t0 = time.time()
    from tensortap.plugins import get_registry

    if "torch" in get_registry().adapters:
        framework = "torch"
        train_torch(args.out, args.steps)
    else:
        framework = "numpy"
        train_numpy(args.out, args.steps)
    trial = tt.create_trial(args.out)
    acc = trial.tensor("test_accuracy")
    last = acc.steps()[-1]
    print(f"trained a {framework} model for {args.steps} steps in {time.time() - t0:.1f} s; "
          f"test accuracy {float(acc.value(last)):.3f} at step {last}")
    fired = [r for r in trial.rule_results() if r["fired"]]
    print(f"rules: {len(trial.rule_results())} evaluations, {len(fired)} fired")
    from tensortap.cli import main as cli

    cli(["ls", args.out])
    report = os.path.join(args.out, "report.html")
    try:
        code = cli(["report", args.out, "--out", report])
    except SystemExit as e:  # the report command is not available in this install
        code = e.code
    print()
    print(f"run:    {os.path.abspath(args.out)}")
    if code == 0 and os.path.exists(report):
        print(f"report: {os.path.abspath(report)}")
    print(f"live:   tensortap serve {args.out}    (a local page of the run; open the URL it prints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
