"""Rule throughput and the cost of live rules on training step time.

    python benchmarks/rules_throughput.py [--steps 1000] [--repeats 5] [--train-steps 300]
        [--only throughput|live] [--intervals 10,1] [--variants "rules: thread,rules: process"]

1. Generates a run of --steps steps x 100 tensors (weights, biases, gradients, ReLU/tanh layer
   inputs and outputs, an image batch, token ids, labels, predictions, a loss; 10 % EVAL steps)
   and evaluates every built-in rule over it with tt.invoke_rule: seconds per rule, values read,
   and the suite's throughput in run tensors per second (steps x 100 / time for all 18 rules).
2. Trains an MLP 784-256-10 (torch with the tensortap-torch plugin when installed, else the
   numpy MLP) --train-steps steps: without tensortap, with a Hook saving weights, gradients,
   outputs and losses every --intervals step(s) and no rules, and with the same Hook plus 8 live
   rules on the rules thread and in the rules process (TENSORTAP_LIVE_RULES) with its default CPU
   budget (automatic below 4 CPUs), with TENSORTAP_RULES_CPU=0.1 and with no budget (=0); in a
   shuffled order each round. Prints mean step time over the loop (the ratio; target <= 1.05x
   against the same hook without rules), median step, training-thread CPU, the training process's CPU (all its threads),
   add_rule and close() time, the rules process's CPU (start-up included, and per evaluated step
   in steady state) and how many saved steps it evaluated, with the load average.
Medians of --repeats runs, measured side by side in this one process.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import statistics
import tempfile
import time
from typing import Dict, List

import numpy as np

import tensortap as tt
from tensortap.rules.live import WHERE_ENV
from tensortap.rules.worker import CPU_ENV, NICE_ENV
from tensortap.testing import use_numpy_adapter

if importlib.util.find_spec("tensortap_torch") is None:
    use_numpy_adapter()  # the training benchmark's numpy MLP (its adapter is no built-in)

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
    """Count stored values read: Tensor.value calls and the values Trial.values_at read together
    (what invoke_rule prefetches); benchmark-only instrumentation."""
    orig, orig_many = tt.Tensor.value, tt.Trial.values_at
    counter = {"n": 0}

    def value(self, *a, **k):
        counter["n"] += 1
        return orig(self, *a, **k)

    def values_at(self, *a, **k):
        got = orig_many(self, *a, **k)
        counter["n"] += len(got)
        return got

    tt.Tensor.value, tt.Trial.values_at = value, values_at
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


# "rules: process" runs with the default budget: automatic (below 4 CPUs: 2 free CPU-seconds, then 0.1 of a CPU)
VARIANTS = ("no hook", "hook, no rules", "rules: thread", "rules: process", "rules: process (cpu 0.1)",
            "rules: process (cpu 0)", "rules: process (nice 0)", "rules: process (nice 10)", "rules: process (nice 19)")
DEFAULT_VARIANTS = VARIANTS[:6]


def train_once(out_dir: str, steps: int, variant: str, interval: int) -> Dict[str, float]:
    """One training run of the MLP; per-step wall and training-thread CPU seconds, and what
    add_rule / close() and the rules process cost."""
    coll = ["weights", "gradients", "outputs", "losses"]
    hook = None
    t_add = 0.0
    if variant != "no hook":
        hook = tt.Hook(out_dir, include_collections=coll, save_config=tt.SaveConfig(save_interval=interval))
    if variant.startswith("rules"):
        os.environ[WHERE_ENV] = variant.split(": ")[1].split(" ")[0]
        for env, tag in ((NICE_ENV, "(nice "), (CPU_ENV, "(cpu ")):
            val = variant.split(tag)[1].rstrip(")") if tag in variant else None
            if val is None:
                os.environ.pop(env, None)  # the default
            else:
                os.environ[env] = val
        t0 = time.perf_counter()
        for n in LIVE:
            hook.add_rule(tt.rules.get(n)())
        t_add = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 784)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    walls, cpus = [], []
    children0 = _children_cpu()
    p0 = time.process_time()
    if importlib.util.find_spec("tensortap_torch") is not None:
        import torch

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        if hook is not None:
            hook.register(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            loss = torch.nn.functional.cross_entropy(model(xt), yt)
            if hook is not None:
                hook.record_loss(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        from tensortap.testing import NumpyMLP

        model = NumpyMLP(784, 256, 10)
        if hook is not None:
            hook.register(model)
            hook.register_loss(model)

        def step():
            model.train_step(x, y, lr=0.01)
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.thread_time()
        step()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.thread_time() - c0)
    proc_cpu = (time.process_time() - p0) / steps  # every thread of the training process: writer, rules threads
    t0 = time.perf_counter()
    if hook is not None:
        hook.close()
    t_close = time.perf_counter() - t0
    w, c = walls[5:], cpus[5:]  # warm-up steps out
    ps = hook._rules.process_stats if hook is not None and hook._rules is not None else {}
    return {"mean": statistics.fmean(w), "median": statistics.median(w), "cpu": statistics.fmean(c),
            "add": t_add, "close": t_close, "child_cpu": _children_cpu() - children0,
            "child_steady": ps.get("cpu_steps_s", 0.0) / max(ps.get("steps", 0), 1),
            "evaluated": ps.get("steps", 0), "proc_cpu": proc_cpu}


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def live_cost(tmp: str, steps: int, repeats: int, intervals=(10, 1), only=None) -> None:
    fw = "torch (tensortap-torch)" if importlib.util.find_spec("tensortap_torch") else "numpy MLP"
    print(f"\n== live rules ({len(LIVE)}: {', '.join(LIVE)}) on training step time, MLP 784-256-10, batch 64, {fw}, "
          f"{steps} steps, median of {repeats} rounds (variants in a shuffled order each round) ==")
    print(f"load before: {_load()}")
    variants = [v for v in VARIANTS if (v in DEFAULT_VARIANTS if only is None else v in only)
                or v in ("no hook", "hook, no rules")]
    order = list(variants)
    rng = random.Random(0)
    old = {k: os.environ.get(k) for k in (WHERE_ENV, NICE_ENV, CPU_ENV)}
    try:
        for interval in intervals:
            got: Dict[str, List[Dict[str, float]]] = {v: [] for v in variants}
            for r in range(repeats):
                rng.shuffle(order)
                for v in order:
                    d = f"{tmp}/live-{interval}-{r}-{variants.index(v)}"
                    got[v].append(train_once(d, steps, v, interval))
                    shutil.rmtree(d, ignore_errors=True)
            med = {v: {k: statistics.median(x[k] for x in got[v]) for k in got[v][0]} for v in variants}
            base, bare = med["hook, no rules"], med["no hook"]
            print(f"\nsave every {interval} step(s); ms per step (mean over the loop | median step | training-thread "
                  f"CPU); ratios of the mean vs the same hook without rules (target <= 1.05x) and vs no hook")
            print(f"{'variant':24s} {'mean ms':>8s} {'median':>8s} {'cpu ms':>8s} {'vs hook':>8s} {'vs none':>8s} "
                  f"{'cpu vs hook':>11s} {'proc cpu ms':>11s} {'add_rule s':>10s} {'close s':>8s} "
                  f"{'rules-proc cpu s':>16s} {'ms/eval':>8s} {'evaluated':>9s}")
            saved = len(range(0, steps, interval))
            for v in variants:
                m = med[v]
                print(f"{v:24s} {1e3 * m['mean']:8.3f} {1e3 * m['median']:8.3f} {1e3 * m['cpu']:8.3f} "
                      f"{m['mean'] / base['mean']:7.3f}x {m['mean'] / bare['mean']:7.3f}x "
                      f"{m['cpu'] / base['cpu']:10.3f}x {1e3 * m['proc_cpu']:11.3f} {m['add']:10.2f} {m['close']:8.2f} "
                      f"{m['child_cpu']:16.2f} {1e3 * m['child_steady']:8.2f} {m['evaluated']:9.0f}")
            print(f"(proc cpu: CPU of every thread of the training process (writer, rules threads) per step; "
                  f"rules-proc cpu: the rules process's CPU, start-up included; ms/eval: its CPU per evaluated "
                  f"step from its first step on (steady state); evaluated: of {saved} saved steps)")
            if "rules: process" in med:
                m = med["rules: process"]
                print(f"(rules: process: {1e3 * m['child_cpu'] / saved:.1f} ms of rules-process CPU per saved step "
                      f"start-up included, {1e3 * m['child_steady']:.2f} ms in steady state)")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    print(f"load after: {_load()}")


def _load() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--only", choices=["throughput", "live"], default=None, help="run one half only")
    ap.add_argument("--intervals", default="10,1", help="save intervals for the live half (comma-separated)")
    ap.add_argument("--variants", default=None, help="live variants to measure (comma-separated; the two "
                    f"baselines always run): {', '.join(VARIANTS[2:])}")
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
            live_cost(tmp, args.train_steps, args.repeats, [int(i) for i in args.intervals.split(",")],
                      None if args.variants is None else [v.strip() for v in args.variants.split(",")])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
