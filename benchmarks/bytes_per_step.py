"""Bytes written per step and write throughput of tensortap on the CNN loop of overhead_torch.py.

Issue 9 asks, for the same CNN training loop as the overhead benchmark (overhead_torch.py's
ResNet-style CNN, ~1M parameters, batch 64, 1 thread, configurations wg10/wg1/red1/og10):

1. bytes written per saved step vs the theoretical minimum, the raw bytes of the tensors the
   configuration asks for. The minimum is computed from the model, independently of tensortap
   where that is simple (wg: every parameter and its gradient as float32, plus the float32 loss;
   red1: five float64 reductions per parameter, gradient and the loss) and cross-checked
   with the payload bytes the run's index holds (`trial.total_bytes()`); for og10 (layer outputs
   and their gradients) the minimum is that payload total. Everything above it is framing (21
   bytes per record), the index (26 bytes per tensor per step + step headers), per-segment name
   definitions and meta.json.
2. write MB/s vs the disk's sequential write MB/s (dd) on the same machine, in the same directory:
   - "in the loop": bytes written / wall time of the training run (bounded by training speed);
   - "store alone": the same arrays (one wg1 step of the CNN, read back from a run) written
     `--store-steps` times through tt.Hook.save_tensor with no training in between, from the first
     save to the end of hook.close(): what the write path sustains for this tensor mix;
   - dd if=/dev/zero of the same byte count, bs=1M (page cache, and with conv=fdatasync). The
     store never fsyncs, so the page-cache dd is the like-for-like line.

Throughput: medians of --runs (>= 5) runs, store and dd alternated; training runs interleave the
configurations run by run (bytes per step are exact: one run suffices, --quick does one).

    python benchmarks/bytes_per_step.py            # ~6 minutes on a quiet 2-core box (og10: 0.56 GB per saved step)
    python benchmarks/bytes_per_step.py --quick    # one 10-step run per configuration, 64 MB store runs: ~1.5 min
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead_torch import CONFIGS, REDUCTIONS, Setup, make  # noqa: E402
from store_throughput import dd  # noqa: E402

import tensortap as tt  # noqa: E402

MB = 1 << 20


def disk_bytes(root: str) -> Dict[str, int]:
    """Bytes on disk under a run, split into data segments, index segments and the rest."""
    out = {"data": 0, "index": 0, "other": 0}
    for d, _, files in os.walk(root):
        for f in files:
            kind = "data" if f.endswith(".ttd") else "index" if f.endswith(".tti") else "other"
            out[kind] += os.path.getsize(os.path.join(d, f))
    return out


def minimum_bytes(config: str) -> int:
    """Raw bytes of what `config` asks tensortap to save at one saved step, from the model alone
    (0 where only the run can tell: og10's layer outputs)."""
    model = make("resnet")[0]
    n_params = [p.numel() for p in model.parameters()]
    if config in ("wg10", "wg1"):
        return 2 * 4 * sum(n_params) + 4  # weights+biases and their gradients (float32), the loss
    if config == "red1":
        return (2 * len(n_params) + 1) * len(REDUCTIONS) * 8  # 5 float64 per tensor, the loss's too
    return 0


def loop_runs(configs, runs: int, steps: int) -> Dict[str, dict]:
    """Train the CNN with tensortap per configuration; per run: wall s/step, bytes on disk,
    payload bytes, saved steps."""
    out: Dict[str, dict] = {c: {"wall": [], "mbps": [], "disk": None, "payload": None, "saved": None} for c in configs}
    for r in range(runs):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))  # alternate the order
        for c in order:
            s = Setup("resnet", c, "tensortap")
            s.train(2)  # warm-up (its saved steps count in bytes/step, not in MB/s)
            before = sum(disk_bytes(s.dir).values())
            t0 = time.perf_counter()
            s.train(steps)
            s.close()
            wall = time.perf_counter() - t0
            sizes = disk_bytes(s.dir)
            trial = tt.create_trial(s.dir)
            res = out[c]
            res["wall"].append(wall / steps)
            total = sum(sizes.values())
            res["mbps"].append((total - before) / MB / wall)
            res["disk"], res["payload"], res["saved"] = sizes, trial.total_bytes(), len(trial.steps())
            s.finish()
    return out


def one_wg1_step() -> Dict[str, np.ndarray]:
    """The arrays tensortap stores at one wg1 step of the CNN (read back from a real run)."""
    s = Setup("resnet", "wg1", "tensortap")
    s.train(1)
    s.close()
    trial = tt.create_trial(s.dir)
    arrays = {n: np.array(trial.tensor(n).value(0)) for n in trial.tensor_names(step=0)}
    s.finish()
    return arrays


def store_alone(arrays: Dict[str, np.ndarray], n_steps: int, base: str) -> float:
    """MB/s of writing `arrays` n_steps times through tt.Hook.save_tensor (no training)."""
    run = tempfile.mkdtemp(dir=base)
    shutil.rmtree(run)
    hook = tt.Hook(run, include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    t0 = time.perf_counter()
    for _ in range(n_steps):
        hook.begin_step(tt.modes.TRAIN)
        for n, a in arrays.items():
            hook.save_tensor(n, a, collections=["weights"])
    hook.close()
    dt = time.perf_counter() - t0
    size = sum(disk_bytes(run).values())
    shutil.rmtree(run, ignore_errors=True)
    return size / MB / dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one training run per configuration (bytes are exact;"
                    " the in-loop MB/s is then one run), 10 steps, 64 MB per store-alone run")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0,
                    help="training steps per run (default 20; --quick 10: one saved step for wg10/og10)")
    ap.add_argument("--store-steps", type=int, default=0, help="wg1 steps per store-alone run (default 32; --quick 8)")
    ap.add_argument("--loop-runs", type=int, default=0, help="training runs per configuration (default --runs;"
                    " --quick 1)")
    ap.add_argument("--dir", default=None, help="directory on the disk to measure (default: the temp dir)")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be >= 5 (medians of at least 5 runs)")
    torch.set_num_threads(1)
    configs = tuple(c for c in args.configs.split(",") if c)
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s) {bad}; choose from {','.join(CONFIGS)}")
    steps = args.steps or (10 if args.quick else 20)
    store_steps = args.store_steps or (8 if args.quick else 32)
    base = tempfile.mkdtemp(prefix="tt-bytes-", dir=args.dir)
    os.environ["TMPDIR"] = base  # overhead_torch's Setup writes its runs with tempfile: same disk as dd
    tempfile.tempdir = None
    t_start = time.time()
    n_params = sum(p.numel() for p in make("resnet")[0].parameters())
    n_loop = args.loop_runs or (1 if args.quick else args.runs)
    print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs; CNN: {n_params:,} parameters, batch 64; "
          f"{n_loop} training run(s) x {steps} steps per configuration; disk: {base}", flush=True)
    try:
        loop = loop_runs(configs, n_loop, steps)
        print("\n1. bytes per saved step (tensortap) vs the raw tensor bytes (the minimum)")
        print(f"  {'config':<7}{'saved':>6}{'raw kB/step':>14}{'(model)':>10}{'disk kB/step':>14}{'overhead':>10}"
              f"{'data kB':>12}{'index kB':>10}{'other B':>9}")
        for c in configs:
            res = loop[c]
            n = res["saved"]
            raw = res["payload"] / n
            model_min = minimum_bytes(c)
            check = "" if not model_min else ("= model" if model_min == raw else f"{model_min / 1e3:.1f}!")
            disk = res["disk"]
            total = sum(disk.values()) / n
            print(f"  {c:<7}{n:>6}{raw / 1e3:>14.1f}{check:>10}{total / 1e3:>14.1f}{(total / raw - 1) * 100:>9.2f}%"
                  f"{disk['data'] / n / 1e3:>12.1f}{disk['index'] / n / 1e3:>10.1f}{disk['other'] / n:>9.0f}")
        print("  raw = payload bytes of the saved arrays (the index's total); '(model)': the same computed from\n"
              "  the model's parameters alone; overhead = disk / raw - 1 (framing, index, names, meta.json)")

        print(f"\n2. write throughput (medians of {args.runs} runs), same directory")
        arrays = one_wg1_step()
        nbytes = sum(a.nbytes for a in arrays.values()) * store_steps
        alone, dd_cache, dd_sync = [], [], []
        for _ in range(args.runs):
            alone.append(store_alone(arrays, store_steps, base))
            dd_cache.append(nbytes / MB / dd(os.path.join(base, "dd.bin"), nbytes, sync=False))
            dd_sync.append(nbytes / MB / dd(os.path.join(base, "dd.bin"), nbytes, sync=True))
        m_alone, m_dd, m_sync = (statistics.median(v) for v in (alone, dd_cache, dd_sync))
        print(f"  dd bs=1M, {nbytes / MB:.0f} MB      page cache {m_dd:8.0f} MB/s   conv=fdatasync {m_sync:8.0f} MB/s")
        print(f"  store alone: {len(arrays)} arrays ({nbytes / store_steps / MB:.1f} MB) x {store_steps} steps "
              f"{m_alone:8.0f} MB/s   = {m_alone / m_dd:.2f}x dd (page cache), {m_alone / m_sync:.2f}x dd fdatasync")
        for c in configs:
            mbps, wall = statistics.median(loop[c]["mbps"]), statistics.median(loop[c]["wall"])
            print(f"  in the loop, {c:<5} {wall * 1e3:8.1f} ms/step   {mbps:8.1f} MB/s written "
                  f"= {mbps / m_dd:.3f}x dd (training-bound; median of {n_loop} run(s))")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\ntotal {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
