"""Iterative Taylor pruning at the seed's scale: a ResNet-50 (torchvision's layout, random init) on
generated images, a few fine-tune steps per iteration, on the CPU.

Prints parameters and model size before and after, the bytes the tensortap run wrote (one Taylor
vector per tapped layer per saved step) beside the bytes whole feature maps and gradients take for
the same steps (the capture tensortap-pruning used before: measured on a second run of the first
iteration's steps, same seed, `--compare-capture`), and the time of each phase.

    python benchmarks/pruning_scale.py                       # ~10-20 min on a busy 2-core CPU
    python benchmarks/pruning_scale.py --iterations 2 --steps 1 --image 32    # a quick look
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

from examples.common.archs import ResNet50  # noqa: E402
from tensortap_pruning import TaylorPruner, count_params, size_mb  # noqa: E402


def generated(n: int, size: int, classes: int, seed: int):
    """Images whose class is where a bright square sits (plus noise): learnable, nothing downloaded."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    cells = int(np.ceil(np.sqrt(classes)))
    step = size // cells
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, cells)
        x[i, :, r * step:(r + 1) * step, col * step:(col + 1) * step] += 2.0
    return x, y


def run_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def fine_tune(model, x, y, steps: int, batch: int, hook, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        hook.record_loss(loss.detach())


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    return float(sum(int((model(x[i:i + 64]).argmax(1) == y[i:i + 64]).sum()) for i in range(0, len(x), 64)) / len(x))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=3, help="prunes (default 3)")
    ap.add_argument("--steps", type=int, default=2, help="fine-tune steps per iteration, each captured (default 2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=96, help="generated image size (default 96)")
    ap.add_argument("--fraction", type=float, default=0.12,
                    help="share of the prunable channels removed per iteration (default 0.14)")
    ap.add_argument("--layers", default="3,4,6,3", help="bottleneck blocks per stage (3,4,6,3: ResNet-50)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--compare-capture", type=int, default=1, help="1: also measure whole-tensor capture (default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="run directory (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.backends.mkldnn.enabled = False  # torch 2.13 CPU oneDNN crashed on some pruned shapes (docs/demos.md)
    layers = tuple(int(v) for v in args.layers.split(","))
    x, y = generated(256 + args.batch * 4, args.image, args.classes, 0)
    xte, yte = generated(64, args.image, args.classes, 1)
    work = args.out or tempfile.mkdtemp(prefix="tt-pruning-scale-")
    t0, cpu0 = time.perf_counter(), time.process_time()
    model = ResNet50(args.classes, layers)
    params0, mb0 = count_params(model), size_mb(model)
    print(f"model: ResNet bottleneck stages {layers}, {args.classes} classes, random init; "
          f"{args.image}x{args.image} generated images, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"before: {params0:,} parameters, {mb0:.1f} MB")
    t = time.perf_counter()
    pruner = TaylorPruner(model, x[:2], filters_per_iteration=1, min_channels=4)
    prunable = sum(g.size for g in pruner.groups if g.prunable)
    pruner.filters_per_iteration = max(1, int(args.fraction * prunable))
    print(f"analysis: {len(pruner.groups)} channel groups, {sum(g.prunable for g in pruner.groups)} prunable "
          f"({prunable:,} channels), {len(pruner.tap_layers)} tapped layers, {time.perf_counter() - t:.1f} s")
    compared = {}
    if args.compare_capture:  # the same first fine-tune, capturing whole feature maps and gradients
        twin = ResNet50(args.classes, layers)
        twin.load_state_dict(model.state_dict())
        tp = TaylorPruner(twin, x[:2], capture="tensors")
        d = os.path.join(work, "tensors")
        hook = tp.make_hook(d)
        t = time.perf_counter()
        fine_tune(twin, x, y, args.steps, args.batch, hook, 0)
        hook.close()
        compared = {"bytes": run_bytes(d), "seconds": time.perf_counter() - t}
        shutil.rmtree(d)
        del twin, tp
    run = os.path.join(work, "run")
    hook = pruner.make_hook(run)
    times = {"fine_tune": 0.0, "prune": 0.0, "evaluate": 0.0}
    first_ft = None
    for it in range(args.iterations + 1):
        t = time.perf_counter()
        fine_tune(model, x, y, args.steps, args.batch, hook, it)
        times["fine_tune"] += time.perf_counter() - t
        first_ft = first_ft if first_ft is not None else time.perf_counter() - t
        if it == 0:
            hook.flush()
            first_bytes = run_bytes(run)
        t = time.perf_counter()
        acc = accuracy(model, xte, yte)
        times["evaluate"] += time.perf_counter() - t
        pruner.record(acc)
        print(f"iteration {it}: {count_params(model):,} parameters, {size_mb(model):.1f} MB, "
              f"accuracy on generated data {acc:.3f} (random init: chance {1 / args.classes:.3f})")
        if it == args.iterations:
            break
        t = time.perf_counter()
        step = pruner.prune()
        times["prune"] += time.perf_counter() - t
        print(f"  pruned {sum(step.removed.values()):,} channels in {len(step.removed)} groups "
              f"({time.perf_counter() - t:.1f} s: read the run, rank, surgery)")
    hook.close()
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out = {"params_before": params0, "params_after": count_params(model), "mb_before": mb0, "mb_after": size_mb(model),
           "run_bytes": run_bytes(run), "first_iteration_bytes": first_bytes, "seconds": total, "cpu_seconds": cpu,
           **times}
    print(f"after:  {out['params_after']:,} parameters ({out['params_after'] / params0:.0%}), {out['mb_after']:.1f} MB "
          f"({out['mb_after'] / mb0:.0%})")
    print(f"run: {out['run_bytes']:,} bytes for {args.iterations + 1} fine-tunes of {args.steps} captured steps "
          f"(Taylor vectors, losses, pruning scalars, rule results)")
    if compared:
        print(f"first fine-tune's capture: whole feature maps and gradients {compared['bytes']:,} bytes "
              f"({compared['seconds']:.1f} s) against Taylor vectors {first_bytes:,} bytes ({first_ft:.1f} s): "
              f"{compared['bytes'] / first_bytes:,.0f}x less")
        out["tensors_first_iteration_bytes"] = compared["bytes"]
    print("time (wall clock): " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
          + f", total {total:.1f} s; CPU time of the process {cpu:.1f} s (a busy machine shows as wall >> CPU)")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
