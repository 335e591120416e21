"""Step-time overhead of tensortap on PyTorch (CPU, 1 thread), side by side with smdebug and TensorBoard.

Models: a ResNet-style CNN (~1M parameters, batch 64, 3x32x32) and an MLP 784-256-10 (batch 64).
Configurations (each compared with the same model without any hook, in the same process):

  wg10   weights + biases + gradients, every 10 steps
  wg1    weights + biases + gradients, every step
  red1   reductions only (min, max, mean, std, l2) of weights, biases and gradients, every step
  og10   layer outputs + their gradients (and parameter gradients), every 10 steps

for tensortap, for smdebug 1.0.34 (in its own venv, built by tools/smdebug-venv.sh; "skipped"
when that venv does not exist), for hand-written `torch.utils.tensorboard` code doing the same
(`add_histogram` per tensor; `add_scalar` of the same five reductions for red1), and for the
floor, "bare torch": the same tensors copied to numpy / the same five reductions computed with
the fewest plain torch passes (aminmax, sum, sum of squares; one host transfer per step) in the
loop, nothing stored: what any tool pays before it writes a byte; and
"np.save by hand": the same, written with np.save to one file per saved step on the training thread.

Method: configurations of every tool (smdebug aside) and one hook-off twin are interleaved run by
run, in a shuffled order each round (so load from other processes hits all of them alike, none
always runs first, and every tool's ratio is to the same hook-off runs); one run = `--steps`
training steps (forward, loss, backward, SGD step) plus the flush of what the run wrote; we print
the median over `--runs` runs (>= 5) of the time per step and the median over runs of its ratio to
the hook-off run of the same round (paired: a slow spell of the machine hits both alike): wall
clock, CPU time of the whole process (every thread, a tool's writer/reducer threads included: the
work it adds) and CPU time of the training thread (what the training loop itself pays; on a
machine with a free core the others run beside it).
The load average is printed at the start and the end. The smdebug configurations run in a
subprocess, with their own hook-off baseline measured in that process.

    python benchmarks/overhead_torch.py            # both models, ~10 minutes on a quiet 2-core box
    python benchmarks/overhead_torch.py --quick    # MLP only + ResNet's wg10/red1, ~3 minutes
    python benchmarks/overhead_torch.py --device cuda --no-bare   # on a GPU (smdebug skipped)
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

_DIRS: List[str] = []  # removed again at exit: smdebug writes training_job_end.ts from its own atexit
SMDEBUG_VENV = os.path.expanduser(os.environ.get("TENSORTAP_SMDEBUG_VENV", "~/.cache/tensortap/venvs/smdebug"))
CONFIGS = ("wg10", "wg1", "red1", "og10")
REDUCTIONS = ("min", "max", "mean", "std", "l2")


# ---- models ------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: widths 32/64/128 with 2/2/3 BasicBlocks (~1.0M parameters)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], 32
        for width, blocks, stride in ((32, 2, 1), (64, 2, 2), (128, 3, 2)):
            for b in range(blocks):
                layers.append(BasicBlock(cin, width, stride if b == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def make(model_name: str, device: str = "cpu"):
    torch.manual_seed(0)
    if model_name == "resnet":
        model, x = ResNet(), torch.randn(64, 3, 32, 32)
    else:
        model, x = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)), torch.randn(64, 784)
    return model.to(device), x.to(device), torch.randint(0, 10, (64,)).to(device)


def host(t: torch.Tensor) -> np.ndarray:
    """A numpy copy of `t` (what the floor and np.save by hand take off the model)."""
    t = t.detach()
    return t.numpy().copy() if t.device.type == "cpu" else t.cpu().numpy()


def sync(device: str) -> None:
    """Wait for the device's queued work (a step's time on a GPU is when its kernels end)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _interval(config: str) -> int:
    return 10 if config.endswith("10") else 1


# ---- one configuration = a model, a train step and a flush -------------------------------------
class Setup:
    def __init__(self, model_name: str, config: str, kind: str, device: str = "cpu") -> None:
        self.device = device
        self.model, self.x, self.y = make(model_name, device)
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.dir = tempfile.mkdtemp(prefix=f"ttbench-{kind}-{config}-")
        _DIRS.append(self.dir)
        self.step = 0
        self.cpu: List[float] = []
        self.thread: List[float] = []
        self.before: Callable[[int], None] = lambda s: None
        self.after: Callable[[int], None] = lambda s: None
        self.flush: Callable[[], None] = lambda: None
        self.close: Callable[[], None] = lambda: None
        if config != "off":
            getattr(self, f"_{kind}")(config)

    def train(self, steps: int) -> float:
        """Wall seconds per step; CPU seconds per step of the whole process (all threads, so the
        writer threads count) go to self.cpu: on a machine shared with other jobs that one is the
        steadier measure of the work a tool adds; CPU seconds of the training thread alone (what
        the training loop itself waits for) go to self.thread."""
        sync(self.device)
        c0 = time.process_time()
        h0 = time.thread_time()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.before(self.step)
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(self.x), self.y)
            loss.backward()
            self.after(self.step)
            self.opt.step()
            self.step += 1
        self.flush()
        sync(self.device)
        wall = (time.perf_counter() - t0) / steps
        self.cpu.append((time.process_time() - c0) / steps)
        self.thread.append((time.thread_time() - h0) / steps)
        return wall

    def finish(self) -> int:
        """Close, and return the bytes written (a capture that silently saved nothing shows as 0)."""
        self.close()
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(self.dir) for f in fs)
        shutil.rmtree(self.dir, ignore_errors=True)
        return size

    # tensortap
    def _tensortap(self, config: str) -> None:
        import tensortap as tt

        colls = ["outputs", "gradients"] if config == "og10" else ["weights", "biases", "gradients"]
        rc = tt.ReductionConfig(reductions=list(REDUCTIONS)) if config == "red1" else None
        hook = tt.Hook(self.dir, include_collections=colls + ["losses"], reduction_config=rc,
                       save_config=tt.SaveConfig(save_interval=_interval(config)))
        hook.register(self.model)
        hook.register_loss(self.loss_fn)
        self.flush = hook.flush
        self.close = hook.close

    # the floor: the same tensors taken off the model with plain torch, nothing stored
    def _bare(self, config: str, save: bool = False) -> None:
        every = _interval(config)
        params = [p for _, p in self.model.named_parameters()]
        outs: List = []

        def keep(step, arrays) -> None:
            if save:  # by hand: one .npy file per saved step
                with open(os.path.join(self.dir, f"step{step}.npy"), "wb") as f:
                    for a in arrays:
                        np.save(f, a)

        if config in ("wg10", "wg1"):
            def after(step):
                if step % every == 0:
                    keep(step, [host(p) for p in params] + [host(p.grad) for p in params])
        elif config == "red1":
            def after(step):  # the fewest plain torch passes: min/max together, sum, sum of squares
                parts = []
                for p in params:
                    for t in (p.detach(), p.grad):
                        parts += [*torch.aminmax(t), t.sum(), (t * t).sum()]
                vals = torch.stack(parts).tolist()  # one transfer for the step
                out = []
                for i in range(0, len(vals), 4):
                    lo, hi, s, q = vals[i:i + 4]
                    n = params[i // 8].numel()
                    mean = s / n
                    out.append(np.array([lo, hi, mean, max(q / n - mean * mean, 0.0) ** 0.5, q ** 0.5]))
                keep(step, out)
        else:  # og10: every layer's output (and parameter gradients) copied to numpy on saved steps
            def on_output(_m, _a, out):
                if self.step % every == 0 and isinstance(out, torch.Tensor):
                    outs.append(host(out))
                    if out.requires_grad:
                        out.register_hook(lambda g: outs.append(host(g)))

            for name, m in self.model.named_modules():
                if name:
                    m.register_forward_hook(on_output)

            def after(step):
                if step % every == 0:
                    keep(step, outs + [host(p.grad) for p in params])
                    outs.clear()
        self.after = after

    # what a user might write instead of a tool: the same copies, np.save'd, on the training thread
    def _npsave(self, config: str) -> None:
        self._bare(config, save=True)

    # smdebug 1.0.34 (only in its own venv)
    def _smdebug(self, config: str) -> None:
        import smdebug.pytorch as smd

        kw = dict(save_config=smd.SaveConfig(save_interval=_interval(config)))
        if config == "og10":
            kw["include_collections"] = ["outputs", "gradients", "losses"]
            kw["include_regex"] = [".*_output_.*"]
        else:
            kw["include_collections"] = ["weights", "biases", "gradients", "losses"]
        if config == "red1":
            kw["reduction_config"] = smd.ReductionConfig(reductions=["min", "max", "mean", "std"], norms=["l2"])
        hook = smd.Hook(out_dir=self.dir, **kw)
        hook.register_module(self.model)
        hook.register_loss(self.loss_fn)
        self.close = hook.close

    # hand-written TensorBoard logging doing the same
    def _tensorboard(self, config: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        w = SummaryWriter(self.dir)
        every = _interval(config)
        params = list(self.model.named_parameters())
        if config in ("wg10", "wg1"):
            def after(step):
                if step % every == 0:
                    for n, p in params:
                        w.add_histogram(n, p, step)
                        w.add_histogram(f"gradients/{n}", p.grad, step)
            self.after = after
        elif config == "red1":
            def after(step):
                for n, p in params:
                    for tag, t in ((n, p.detach()), (f"gradients/{n}", p.grad)):
                        stats = torch.stack([t.min(), t.max(), t.mean(), t.std(correction=0), t.norm()]).tolist()
                        for r, v in zip(REDUCTIONS, stats):
                            w.add_scalar(f"{tag}/{r}", v, step)
            self.after = after
        else:  # og10: forward hooks record outputs, tensor hooks their gradients, on saved steps only
            pending: List = []

            def on_output(name, _m, _a, out):
                if self.step % every or not isinstance(out, torch.Tensor):
                    return
                w.add_histogram(f"{name}/output_0", out.detach(), self.step)
                if out.requires_grad:
                    out.register_hook(lambda g, n=name: pending.append((n, g)))

            for name, m in self.model.named_modules():
                if name:
                    m.register_forward_hook(lambda m, a, o, n=name: on_output(n, m, a, o))

            def after(step):
                if step % every == 0:
                    while pending:
                        n, g = pending.pop()
                        w.add_histogram(f"gradients/{n}/output_0", g, step)
                    for n, p in params:
                        w.add_histogram(f"gradients/{n}", p.grad, step)
            self.after = after
        self.flush = w.flush
        self.close = w.close


# ---- measuring ---------------------------------------------------------------------------------
def measure(model_name: str, kind: str, configs, runs: int, steps: int, warmup: int = 2,
            device: str = "cpu") -> Dict[str, List[float]]:
    """Per configuration, `runs` seconds per step (configurations interleaved run by run), and
    under "bytes/<config>" the bytes that configuration wrote."""
    return measure_together(model_name, (kind,), configs, runs, steps, warmup, device)[kind]


def measure_together(model_name: str, kinds, configs, runs: int, steps: int, warmup: int = 2,
                     device: str = "cpu") -> Dict[str, Dict[str, List[float]]]:
    """`measure` of several tools at once: every (tool, configuration) and ONE hook-off twin
    interleaved run by run in a shuffled order, so every tool's ratio is to the same hook-off runs
    of the same rounds (tools measured one after the other each had their own, minutes apart,
    and a process's later hook-off runs read up to 1.4x slower than its first ones)."""
    keys = [("off", "off")] + [(k, c) for k in kinds for c in configs]
    setups = {key: Setup(model_name, key[1], key[0], device) for key in keys}
    times: Dict[tuple, List[float]] = {key: [] for key in keys}
    try:
        for su in setups.values():
            su.train(warmup)
        rng = random.Random(0)
        for _ in range(runs):
            order = list(keys)
            rng.shuffle(order)  # no configuration always runs first (or right after another one)
            for key in order:
                times[key].append(setups[key].train(steps))
    finally:
        sizes = {key: float(su.finish()) for key, su in setups.items()}
    out: Dict[str, Dict[str, List[float]]] = {}
    for k in kinds:
        res: Dict[str, List[float]] = {}
        for key in [("off", "off")] + [(k, c) for c in configs]:
            c, su = key[1], setups[key]
            res[c] = times[key]
            res[f"bytes/{c}"] = [sizes[key]]
            res[f"cpu/{c}"] = su.cpu[1:]  # without the warm-up
            res[f"thread/{c}"] = su.thread[1:]
        out[k] = res
    return out


def smdebug_python() -> Optional[str]:
    py = os.path.join(SMDEBUG_VENV, "bin", "python")
    return py if os.path.exists(py) else None


def measure_smdebug(model_name: str, configs, runs: int, steps: int) -> Optional[Dict[str, List[float]]]:
    py = smdebug_python()
    if py is None:
        return None
    cmd = [py, os.path.abspath(__file__), "--worker", "smdebug", "--models", model_name, "--configs", ",".join(configs),
           "--runs", str(runs), "--steps", str(steps)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        print(f"  smdebug run failed (rc={p.returncode}): {p.stderr.strip().splitlines()[-1:] }", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def report(model_name: str, results: Dict[str, Optional[Dict[str, List[float]]]], configs) -> List[dict]:
    sizes = {k: {c: v.get(f"bytes/{c}", [0.0])[0] for c in configs} if v else {} for k, v in results.items()}
    rows = _table(model_name, results, sizes, configs, "wall-clock")
    cpu = {k: ({c: v[f"cpu/{c}"] for c in ("off",) + tuple(configs) if v.get(f"cpu/{c}")} if v else None)
           for k, v in results.items()}
    for r, c in zip(rows, _table(model_name, cpu, sizes, configs, "process CPU time (all threads)")):
        r.update(cpu_ms=c["ms"], cpu_ratio=c["ratio"], cpu_off_ms=c["off_ms"])
    thr = {k: ({c: v[f"thread/{c}"] for c in ("off",) + tuple(configs) if v.get(f"thread/{c}")} if v else None)
           for k, v in results.items()}
    for r, c in zip(rows, _table(model_name, thr, sizes, configs, "training-thread CPU time")):
        r.update(thread_ms=c["ms"], thread_ratio=c["ratio"], thread_off_ms=c["off_ms"])
    return rows


def paired_ratio(times: List[float], off: List[float]) -> float:
    """Median over runs of (this run / the hook-off run of the same round): a slow spell of the
    machine hits both runs of a round alike and cancels, where a ratio of medians keeps it."""
    if len(times) != len(off):
        return statistics.median(times) / statistics.median(off)
    return statistics.median(t / o for t, o in zip(times, off))


def _table(model_name, results, sizes, configs, what) -> List[dict]:
    rows = []
    print(f"\n{model_name}, {what}: median ms/step over runs (median over runs of the ratio to the same round's "
          f"hook-off run) [MB written]")
    print(f"  {'config':<8}" + "".join(f"{k:>28}" for k in results))
    base = {k: (statistics.median(v["off"]) if v else None) for k, v in results.items()}
    print(f"  {'off':<8}" + "".join(f"{(f'{base[k] * 1e3:.1f}' if base[k] else 'skipped'):>28}" for k in results))
    for c in configs:
        cells = []
        for k, v in results.items():
            if not v or c not in v:
                cells.append("skipped")
                continue
            med = statistics.median(v[c])
            ratio = paired_ratio(v[c], v["off"])
            mb = sizes[k].get(c, 0.0) / 1e6
            rows.append({"model": model_name, "tool": k, "config": c, "ms": med * 1e3, "ratio": ratio,
                         "off_ms": base[k] * 1e3, "runs": len(v[c]), "mb_written": mb})
            cells.append(f"{med * 1e3:.1f} ({ratio:.2f}x) [{mb:.0f}]")
        print(f"  {c:<8}" + "".join(f"{cell:>28}" for cell in cells))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="MLP in full, ResNet only wg10 and red1 (~3 min)")
    ap.add_argument("--models", default="mlp,resnet")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--steps", type=int, default=0, help="steps per run (default: 10 ResNet, 30 MLP)")
    ap.add_argument("--no-smdebug", action="store_true")
    ap.add_argument("--no-tensorboard", action="store_true")
    ap.add_argument("--no-bare", action="store_true",
                    help="skip the floor (plain torch copies/reductions, nothing stored) and np.save by hand")
    ap.add_argument("--device", default="cpu", help="where the models train: cpu (default) or cuda (smdebug skipped)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _DIRS])  # runs after smdebug's
    torch.set_num_threads(1)
    configs = tuple(c for c in args.configs.split(",") if c)
    if args.worker:  # inside the smdebug venv: print one JSON line
        print(json.dumps(measure(args.models, args.worker, configs, args.runs, args.steps)))
        return 0
    if args.device != "cpu" and not torch.device(args.device).type == "cuda":
        ap.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.device != "cpu" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False); use --device cpu")
    if args.runs < 5:
        ap.error("--runs must be >= 5 (medians of at least 5 runs)")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.device != "cpu":
        print(f"device {args.device}: {torch.cuda.get_device_name(args.device)}; smdebug skipped (its venv is "
              "CPU-only)")
        args.no_smdebug = True
    print(f"torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs; smdebug venv: "
          f"{'found' if smdebug_python() else 'missing (tools/smdebug-venv.sh builds it)'}")
    rows = []
    t_start = time.time()
    for model_name in args.models.split(","):
        cfgs = configs
        if args.quick and model_name == "resnet":
            cfgs = tuple(c for c in configs if c in ("wg10", "red1"))
        steps = args.steps or (10 if model_name == "resnet" else 30)
        n_params = sum(p.numel() for p in make(model_name)[0].parameters())
        print(f"\n== {model_name}: {n_params:,} parameters, batch 64, {args.runs} runs x {steps} steps", flush=True)
        kinds = {"tensortap": "tensortap"}
        if not args.no_bare:
            kinds.update({"bare torch (floor)": "bare", "np.save by hand": "npsave"})
        if not args.no_tensorboard:
            kinds["tensorboard"] = "tensorboard"
        # every tool in one interleaved measurement, beside one shared hook-off twin (smdebug: its own venv)
        together = measure_together(model_name, tuple(kinds.values()), cfgs, args.runs, steps, device=args.device)
        results: Dict[str, Optional[Dict[str, List[float]]]] = {label: together[k] for label, k in kinds.items()}
        if not args.no_smdebug:
            results["smdebug 1.0.34"] = measure_smdebug(model_name, cfgs, args.runs, steps)
        rows += report(model_name, results, cfgs)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntotal {time.time() - t_start:.0f} s; load average at end: {load}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
