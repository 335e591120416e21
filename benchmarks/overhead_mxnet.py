"""Step-time overhead of tensortap on a Gluon HybridSequential CNN, hybridized and not (CPU, 1 thread).

Each configuration has its own model; they train in interleaved blocks of --steps steps (one save
interval, so "every 10" has exactly one saved step per block), each block timed until the engine
has finished it; the hook's writer is then drained, untimed (its time is printed beside). Printed per
model mode: median time per step and the median over blocks of (config / off of the same round), so
load drift on a shared machine cancels out.

    ~/.cache/tensortap/venvs/all/bin/python benchmarks/overhead_mxnet.py [--steps 10] [--repeats 15]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

import tensortap as tt  # noqa: E402

CONFIGS = {
    "off": None,
    "weights+gradients every 10": (["weights", "biases", "gradients"], 10),
    "weights+gradients every step": (["weights", "biases", "gradients"], 1),
    "outputs+gradients every 10": (["outputs", "gradients"], 10),
}


def make_cnn(hybridize: bool):
    net = nn.HybridSequential(prefix="bench_")
    with net.name_scope():
        net.add(nn.Conv2D(16, 3, padding=1, activation="relu"), nn.MaxPool2D(),
                nn.Conv2D(32, 3, padding=1, activation="relu"), nn.MaxPool2D(),
                nn.Conv2D(64, 3, padding=1, activation="relu"), nn.GlobalAvgPool2D(),
                nn.Flatten(), nn.Dense(128, activation="relu"), nn.Dense(10))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier())
    if hybridize:
        net.hybridize()
    return net


class Setup:
    """One model + trainer (+ hook) per configuration, trained in blocks of steps."""

    def __init__(self, config, hybridize: bool, batch: int, out_root: str) -> None:
        self.net = make_cnn(hybridize)
        rng = np.random.default_rng(0)
        self.x = mx.nd.array(rng.normal(size=(batch, 3, 32, 32)).astype(np.float32))
        self.y = mx.nd.array(rng.integers(0, 10, batch))
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        self.hook = None
        self.drain: list = []
        if config is not None:
            colls, interval = config
            self.hook = tt.Hook(tempfile.mkdtemp(dir=out_root), include_collections=colls,
                                save_config=tt.SaveConfig(save_interval=interval))
            self.hook.register(self.net)
        self.trainer = gluon.Trainer(self.net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9})

    def block(self, steps: int) -> float:
        """Seconds per step over `steps` steps, until the engine has finished them. The hook's writer
        then drains (untimed, reported separately) so no work spills into another configuration."""
        t0 = time.perf_counter()
        for _ in range(steps):
            with autograd.record():
                loss = self.loss_fn(self.net(self.x), self.y).mean()
            loss.backward()
            self.trainer.step(1)
        mx.nd.waitall()
        dt = (time.perf_counter() - t0) / steps
        if self.hook is not None:
            t1 = time.perf_counter()
            self.hook.flush()
            self.drain.append((time.perf_counter() - t1) / steps)
        return dt

    def close(self) -> None:
        if self.hook is not None:
            self.hook.close()
            assert not self.hook.errors, self.hook.errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block (one save interval)")
    ap.add_argument("--repeats", type=int, default=15, help="timed blocks per configuration")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    probe = make_cnn(False)
    probe(mx.nd.zeros((1, 3, 32, 32)))
    n_params = sum(p.data().size for p in probe.collect_params().values())
    print(f"mxnet {mx.__version__}, CNN 3x32x32 -> 10, batch {args.batch}, {args.repeats} blocks of {args.steps} "
          "steps, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} (params: {n_params})")
    with tempfile.TemporaryDirectory() as root:
        for hybridize in (False, True):
            setups = {name: Setup(cfg, hybridize, args.batch, root) for name, cfg in CONFIGS.items()}
            for st in setups.values():
                st.block(3)  # warm-up: kernels, allocator, the hybridized graph
            times = {k: [] for k in CONFIGS}
            for _ in range(args.repeats):
                for name, st in setups.items():  # interleaved blocks: load changes hit every config alike
                    times[name].append(st.block(args.steps))
            for st in setups.values():
                st.close()
            print(f"\n{'hybridized' if hybridize else 'imperative'}:")
            for name in CONFIGS:
                med = statistics.median(times[name])
                paired = statistics.median(t / b for t, b in zip(times[name], times["off"]))
                drain = statistics.median(setups[name].drain) * 1e3 if setups[name].drain else 0.0
                print(f"  {name:30s} {med * 1e3:7.2f} ms/step  ratio {paired:5.3f}x  "
                      f"(min {min(times[name]) * 1e3:6.2f} ms; writer drain after the block {drain:5.2f} ms/step)")


if __name__ == "__main__":
    main()
