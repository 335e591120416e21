"""Rule throughput and the cost of live rules on training step time.

    python benchmarks/rules_throughput.py [--steps 1000] [--repeats 5] [--train-steps 150] [--only live]

1. Generates a run of --steps steps x 100 tensors (weights, biases, gradients, ReLU/tanh layer
   inputs and outputs, an image batch, token ids, labels, predictions, a loss; 10 % EVAL steps)
   and evaluates every built-in rule over it with tt.invoke_rule: seconds per rule, values read,
   and the suite's throughput in run tensors per second (steps x 100 / time for all 18 rules).
2. Trains an MLP 784-256-10 (torch with the tensortap-torch plugin when installed, else the
   numpy MLP) with a Hook saving weights, gradients, outputs and losses, with and without live
   rules, alternating A/B; prints median step times and their ratio (target <= 1.05x).
Medians of --repeats runs, measured side by side in this one process.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from typing import Dict, List

import numpy as np

import tensortap as tt

BUILTIN = ["vanishing_gradient", "exploding_tensor", "loss_not_decreasing", "overfit", "overtraining", "dead_relu",
           "poor_weight_initialization", "saturated_activation", "weight_update_ratio", "all_zero",
           "unchanged_tensor", "tensor_variance", "class_imbalance", "confusion", "check_input_images",
           "nlp_sequence_ratio", "similar_across_runs", "stalled_training"]
LIVE = ["vanishing_gradient", "exploding_tensor", "loss_not_decreasing", "weight_update_ratio", "unchanged_tensor",
        "all_zero", "dead_relu", "overtraining"]


def make_run(path: str, steps: int) -> int:
    """steps x 100 tensors; returns the tensor count per step."""
    rng = np.random.default_rng(0)
    w = [rng.standard_normal((16, 16)).astype(np.float32) * 0.3 for _ in range(20)]
    hook = tt.Hook(path, include_collections=["weights", "biases", "gradients", "inputs", "outputs", "losses"],
                   save_config=tt.SaveConfig(save_interval=1))
    n = 0
    for s in range(steps):
        hook.begin_step(tt.modes.EVAL if s % 20 >= 18 else tt.modes.TRAIN)
        items = []
        for i in range(20):
            items.append((f"layer{i}.weight", w[i] * (1 - 1e-3 * s), "weights"))
            items.append((f"gradients/layer{i}.weight", rng.standard_normal((16, 16)).astype(np.float32) * 1e-2,
                          "gradients"))
            items.append((f"relu{i}/output_0", np.maximum(rng.standard_normal((32, 16)), 0).astype(np.float32),
                          "outputs"))
        for i in range(15):
            items.append((f"layer{i}.bias", np.full(16, 0.01 * (s + 1), np.float32), "biases"))
        for i in range(10):
            items.append((f"relu{i}/input_0", rng.standard_normal((32, 16)).astype(np.float32), "inputs"))
            items.append((f"tanh{i}/input_0", rng.standard_normal((32, 16)).astype(np.float32) * 3, "inputs"))
        items.append(("conv1/input_0", rng.standard_normal((32, 1, 8, 8)).astype(np.float32), "inputs"))
        items.append(("embedding/input_0", rng.integers(0, 50, (32, 20)), "inputs"))
        y = rng.integers(0, 10, 32)
        items.append(("labels", y, "labels"))
        items.append(("predictions", np.where(rng.random(32) < 0.9, y, (y + 1) % 10), "predictions"))
        items.append(("loss", np.float32(2.0 / (1 + 0.01 * s) + 0.01 * rng.random()), "losses"))
        for name, v, coll in items:
            hook.save_tensor(name, v, collections=[coll])
        n = len(items)
    hook.close()
    return n


def make_rule(name: str, run: str):
    params = {"tensor_variance": {"max_threshold": 1e6}, "similar_across_runs": {"other_trial": run}}
    return tt.rules.get(name)(**params.get(name, {}))


def count_reads():
    """Count Tensor.value calls (benchmark-only instrumentation)."""
    orig = tt.Tensor.value
    counter = {"n": 0}

    def value(self, *a, **k):
        counter["n"] += 1
        return orig(self, *a, **k)

    tt.Tensor.value = value
    return counter


def throughput(run: str, per_step: int, steps: int, repeats: int) -> None:
    counter = count_reads()
    times: Dict[str, List[float]] = {n: [] for n in BUILTIN}
    cpu: Dict[str, List[float]] = {n: [] for n in BUILTIN}
    reads: Dict[str, int] = {}
    for _ in range(repeats):
        for name in BUILTIN:
            trial = tt.create_trial(run)
            rule = make_rule(name, run)
            counter["n"] = 0
            t0, c0 = time.perf_counter(), time.process_time()
            res = tt.invoke_rule(rule, trial)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            reads[name] = counter["n"]
            assert len(res) == steps, (name, len(res))
    med = {n: statistics.median(v) for n, v in times.items()}
    cmed = {n: statistics.median(v) for n, v in cpu.items()}
    print(f"\n== all {len(BUILTIN)} built-in rules over {steps} steps x {per_step} tensors "
          f"(median of {repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs) ==")
    print(f"{'rule':28s} {'wall s':>8s} {'cpu s':>8s} {'ms/step':>8s} {'values read':>12s} {'values/cpu-s':>12s}")
    for n in BUILTIN:
        print(f"{n:28s} {med[n]:8.3f} {cmed[n]:8.3f} {1e3 * med[n] / steps:8.3f} {reads[n]:12d} "
              f"{reads[n] / max(cmed[n], 1e-9):12.0f}")
    total, ctotal, nreads = sum(med.values()), sum(cmed.values()), sum(reads.values())
    print(f"{'ALL':28s} {total:8.3f} {ctotal:8.3f} {1e3 * total / steps:8.3f} {nreads:12d} {nreads / ctotal:12.0f}")
    print(f"suite throughput: {steps * per_step / total:,.0f} run tensors/s wall, {steps * per_step / ctotal:,.0f} per "
          f"CPU-second ({steps * per_step} tensors through all {len(BUILTIN)} rules: {total:.1f} s wall, "
          f"{ctotal:.1f} s CPU); {nreads / total:,.0f} values read/s wall")


def train_once(out_dir: str, steps: int, with_rules: bool, interval: int) -> float:
    """Median step time (s) of one training run."""
    coll = ["weights", "gradients", "outputs", "losses"]
    hook = tt.Hook(out_dir, include_collections=coll, save_config=tt.SaveConfig(save_interval=interval))
    if with_rules:
        for n in LIVE:
            hook.add_rule(tt.rules.get(n)())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    stamps = []
    if importlib.util.find_spec("tensortap_torch") is not None:
        import torch

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        hook.register(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(xt), yt)
            hook.record_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            stamps.append(time.perf_counter() - t0)
    else:
        from tensortap.testing import NumpyMLP

        model = NumpyMLP(784, 256, 10)
        hook.register(model)
        hook.register_loss(model)
        for _ in range(steps):
            t0 = time.perf_counter()
            model.train_step(x, y, lr=0.01)
            stamps.append(time.perf_counter() - t0)
    hook.close()
    return statistics.median(stamps[5:])


def live_cost(tmp: str, steps: int, repeats: int) -> None:
    fw = "torch (tensortap-torch)" if importlib.util.find_spec("tensortap_torch") else "numpy MLP"
    print(f"\n== live rules ({len(LIVE)}: {', '.join(LIVE)}) on training step time, MLP 784-256-10, batch 64, {fw} ==")
    for interval in (10, 1):
        a, b = [], []
        for r in range(repeats):
            for with_rules, out in ((False, a), (True, b)):
                d = f"{tmp}/live-{interval}-{r}-{int(with_rules)}"
                out.append(train_once(d, steps, with_rules, interval))
                shutil.rmtree(d, ignore_errors=True)
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"save every {interval:2d} step(s): hook only {1e3 * ma:.3f} ms/step, hook + live rules "
              f"{1e3 * mb:.3f} ms/step, ratio {mb / ma:.3f}x (target <= 1.05x)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--only", choices=["throughput", "live"], default=None, help="run one half only")
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    tmp = tempfile.mkdtemp()
    try:
        if args.only != "live":
            run = f"{tmp}/run"
            t0 = time.perf_counter()
            per_step = make_run(run, args.steps)
            print(f"generated {args.steps} steps x {per_step} tensors in {time.perf_counter() - t0:.1f} s")
            throughput(run, per_step, args.steps, args.repeats)
        if args.only != "throughput":
            live_cost(tmp, args.train_steps, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
