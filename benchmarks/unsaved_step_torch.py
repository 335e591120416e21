"""What a registered hook costs on steps it does not save (PyTorch, CPU, 1 thread).

    python benchmarks/unsaved_step_torch.py [--model mlp|tiny] [--rounds 24] [--steps 200]
        [--collections weights,biases,gradients,losses] [--loss record|register] [--clock wall|cpu]

Three identical models live in one process: two without tensortap and one with a Hook whose
SaveConfig saves step 0 only. Each round trains each of them --steps steps (forward, loss,
hook.record_loss on the hooked one, or with --loss register a loss module given to
hook.register_loss, backward, SGD step) in a shuffled order. Per round: the hooked
twin's time over the first plain twin's (the cost) and the second plain twin's over the first
(the A/A control: what two identical models differ by on this machine with no hook at all).
Prints the medians and quartiles over rounds and the added microseconds per step. Separate
processes vary by +-15 % on the development VM; twins in one process, paired per round, resolve
a few percent. On a machine loaded by other jobs, `--clock cpu` times each twin by the training
thread's own CPU time (time.thread_time: what the step computes, not the time it waits for a core),
which resolves the hook's few microseconds where wall-clock rounds differ by tens of percent.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from typing import Callable, List

import numpy as np
import torch
from torch import nn

import tensortap as tt


def make(model: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        if model == "tiny":
            return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    return build


def quartiles(xs: List[float]) -> str:
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    return f"{q2:.3f}x (quartiles {q1:.3f}-{q3:.3f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["mlp", "tiny"], default="mlp")
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--collections", default="weights,biases,gradients,losses")
    ap.add_argument("--loss", choices=["record", "register"], default="record",
                    help="hook.record_loss(loss) each step, or hook.register_loss(loss module) once")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="time by the wall clock, or by the training thread's CPU time (loaded machines)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    build = make(args.model)
    batch, width = (4, 8) if args.model == "tiny" else (64, 784)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, width, generator=g)
    y = torch.randint(0, 2 if args.model == "tiny" else 10, (batch,), generator=g)
    out = tempfile.mkdtemp()
    hook = tt.Hook(out, include_collections=args.collections.split(","), save_config=tt.SaveConfig(save_steps=[0]))
    twins = {"plain": build(), "plain, again": build(), "hooked": build()}
    hook.register(twins["hooked"])
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in twins.items()}
    loss_fns = {k: nn.CrossEntropyLoss() for k in twins}
    if args.loss == "register":
        hook.register_loss(loss_fns["hooked"])

    clock = time.perf_counter if args.clock == "wall" else time.thread_time

    def train(name: str, steps: int) -> float:
        m, opt, loss_fn = twins[name], opts[name], loss_fns[name]
        h = hook if name == "hooked" and args.loss == "record" else None
        t0 = clock()
        for _ in range(steps):
            loss = loss_fn(m(x), y)
            if h is not None:
                h.record_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (clock() - t0) / steps

    for name in twins:  # warm-up; the hooked twin saves its step 0 here
        train(name, 20)
    hook.flush()
    order, rng = list(twins), random.Random(0)
    cost, control, added, base = [], [], [], []
    for _ in range(args.rounds):
        rng.shuffle(order)
        t = {name: train(name, args.steps) for name in order}
        cost.append(t["hooked"] / t["plain"])
        control.append(t["plain, again"] / t["plain"])
        added.append(1e6 * (t["hooked"] - t["plain"]) - 1e6 * (t["plain, again"] - t["plain"]))
        base.append(1e3 * t["plain"])
    hook.close()
    saved = tt.create_trial(out).steps()
    assert saved == [0], f"the hook saved steps {saved}; only step 0 was to be saved"
    print(f"{args.model}: {args.rounds} rounds x {args.steps} steps, plain step {statistics.median(base):.3f} ms, "
          f"collections {args.collections}, loss by {args.loss}, {args.clock} clock")
    print(f"  hooked / plain        {quartiles(cost)}")
    print(f"  plain again / plain   {quartiles(control)}   (A/A control: no hook at all)")
    print(f"  the hook adds {statistics.median(added):.1f} us per unsaved step beyond the control")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
