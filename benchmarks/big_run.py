"""Big runs (issue 9, Scale): how reading scales with the run's size.

Generates runs of N steps x T tensors (small float32 arrays) through the store writer, then
measures, for each run size: create_trial (open: reads the index), tensor_names, one value()
lookup (median over random (tensor, step) pairs: must not grow with the run), a whole tensor's
steps(), and the index and data size on disk. Default sizes 1k/3k/10k steps x 1,000 tensors.

  python benchmarks/big_run.py [--steps 1000,3000,10000] [--tensors 1000] [--elems 8] [--reps 5]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time

import numpy as np

import tensortap as tt
from tensortap.store import StepBatch, StoreWriter, TensorItem, layout


def generate(root: str, steps: int, tensors: int, elems: int) -> float:
    names = [f"layer{i // 4}.{('weight', 'bias', 'grad', 'out')[i % 4]}" for i in range(tensors)]
    base = np.arange(elems, dtype=np.float32)
    colls = ("weights",)
    t0 = time.perf_counter()
    w = StoreWriter(root, 0, queue_bytes=64 << 20)
    for s in range(steps):
        w.submit(StepBatch(s, "train", s, [TensorItem(n, "value", colls, base + (s + i)) for i, n in enumerate(names)]))
    w.close()
    return time.perf_counter() - t0


def disk(root: str):
    idx = data = 0
    wdir = os.path.join(root, layout.WORKERS_DIR, "worker-0")
    for f in os.listdir(wdir):
        size = os.path.getsize(os.path.join(wdir, f))
        if layout.INDEX_RE.match(f):
            idx += size
        elif layout.DATA_RE.match(f):
            data += size
    return idx, data


def measure(root: str, steps: int, tensors: int, elems: int, reps: int) -> dict:
    opens, names_t = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        trial = tt.create_trial(root)
        opens.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        names = trial.tensor_names()
        names_t.append(time.perf_counter() - t0)
        trial.close()
        trial._cache.clear()
    assert len(names) == tensors and len(trial.steps()) == steps
    trial = tt.create_trial(root)
    rnd = random.Random(steps)
    pairs = [(rnd.choice(names), rnd.randrange(steps)) for _ in range(2000)]
    lookups = []
    for name, s in pairs:
        t0 = time.perf_counter()
        v = trial.tensor(name).value(s)
        lookups.append(time.perf_counter() - t0)
        assert v.shape == (elems,)
    t0 = time.perf_counter()
    n_steps = len(trial.tensor(names[0]).steps())
    tsteps = time.perf_counter() - t0
    assert n_steps == steps
    idx, data = disk(root)
    return {"open": statistics.median(opens), "names": statistics.median(names_t),
            "lookup": statistics.median(lookups), "lookup_p99": sorted(lookups)[int(len(lookups) * 0.99)],
            "tsteps": tsteps, "index": idx, "data": data}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="1000,3000,10000", help="comma-separated run sizes in steps")
    ap.add_argument("--tensors", type=int, default=1000)
    ap.add_argument("--elems", type=int, default=8, help="float32 elements per tensor")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="tt-bigrun-", dir=args.dir)
    print(f"{args.tensors} tensors of {args.elems} float32 per step; medians of {args.reps} opens, 2000 lookups")
    hdr = (f"{'steps':>6} {'tensors':>8} | {'write s':>7} | {'create_trial':>12} {'tensor_names':>12} "
           f"{'value() µs':>10} {'p99 µs':>7} {'t.steps()':>9} | {'index MB':>8} {'B/entry':>7} {'data MB':>8}")
    print(hdr)
    print("-" * len(hdr))
    try:
        for steps in [int(s) for s in args.steps.split(",")]:
            root = os.path.join(base, f"run{steps}")
            wt = generate(root, steps, args.tensors, args.elems)
            m = measure(root, steps, args.tensors, args.elems, args.reps)
            print(f"{steps:>6} {args.tensors:>8} | {wt:>7.1f} | {m['open']:>11.3f}s {m['names'] * 1e3:>10.2f}ms "
                  f"{m['lookup'] * 1e6:>10.1f} {m['lookup_p99'] * 1e6:>7.1f} {m['tsteps'] * 1e3:>7.1f}ms | "
                  f"{m['index'] / 2 ** 20:>8.1f} {m['index'] / (steps * args.tensors):>7.1f} "
                  f"{m['data'] / 2 ** 20:>8.1f}",
                  flush=True)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
