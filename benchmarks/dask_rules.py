"""Rule evaluation over a run on Dask: speed-up of 2 workers vs 1 on this machine.

    python benchmarks/dask_rules.py [--steps 60] [--mb 2] [--repeats 5]

Generates a run (steps x 4 tensors of --mb MB each), evaluates a CPU-bound rule (the 5/95
percentile spread of every gradient, as poor_weight_initialization does) serially, on a
1-worker and on a 2-worker LocalCluster, and prints medians and the ratio.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import numpy as np

import tensortap as tt


def make_run(path: str, steps: int, mb: float) -> None:
    n = int(mb * 1024 * 1024 / 4)
    rng = np.random.default_rng(0)
    base = [rng.standard_normal(n).astype(np.float32) for _ in range(4)]
    hook = tt.Hook(path, include_collections=[tt.Collection("gradients")], save_config=tt.SaveConfig(save_interval=1))
    for s in range(steps):
        hook.begin_step()
        for i, b in enumerate(base):
            hook.save_tensor(f"gradients/layer{i}.weight", b * (1 + 0.01 * s), collections=["gradients"])
    hook.close()


def factory():
    class Spread(tt.rules.Rule):
        name = "percentile_spread"

        def invoke_at_step(self, trial, step):
            spreads = []
            for n in trial.tensor_names(collection="gradients"):
                lo, hi = np.percentile(trial.tensor(n).value(step), [5, 95])
                spreads.append(hi - lo)
            return min(spreads) < 1e-3, f"min spread {min(spreads):.4g}"

    return Spread()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from dask.distributed import Client, LocalCluster

    tmp = tempfile.mkdtemp()
    run = f"{tmp}/run"
    make_run(run, args.steps, args.mb)
    times = {"serial": [], "dask 1 worker": [], "dask 2 workers": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tt.invoke_rule(factory(), tt.create_trial(run))
        times["serial"].append(time.perf_counter() - t0)
    for n, label in ((1, "dask 1 worker"), (2, "dask 2 workers")):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=50) as cluster, Client(cluster) as client:
            tt.parallel.invoke_rule_parallel(factory, run, client=client)  # warm the workers
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                tt.parallel.invoke_rule_parallel(factory, run, client=client)
                times[label].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"run: {args.steps} steps x 4 tensors x {args.mb} MB; median of {args.repeats}")
    for k, v in med.items():
        print(f"  {k:16s} {v:7.3f} s")
    print(f"speed-up 2 workers vs 1: {med['dask 1 worker'] / med['dask 2 workers']:.2f}x")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
