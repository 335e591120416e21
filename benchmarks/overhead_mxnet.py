"""Step-time overhead of tensortap on a Gluon HybridSequential CNN, hybridized and not (CPU, 1 thread).

Prints, per model mode, the median time per step of each configuration and its ratio to the run
without a hook, measured side by side: configurations interleaved within each repeat, the ratio
is the median over repeats of (config / off) of the same repeat, so load drift cancels.

    ~/.cache/tensortap/venvs/all/bin/python benchmarks/overhead_mxnet.py [--steps 40] [--repeats 5]
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


def run(config, hybridize: bool, steps: int, batch: int, out_root: str) -> float:
    """Seconds per training step (after 3 warm-up steps), hook per `config`."""
    net = make_cnn(hybridize)
    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.normal(size=(batch, 3, 32, 32)).astype(np.float32))
    y = mx.nd.array(rng.integers(0, 10, batch))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    hook = None
    if config is not None:
        colls, interval = config
        hook = tt.Hook(tempfile.mkdtemp(dir=out_root), include_collections=colls,
                       save_config=tt.SaveConfig(save_interval=interval))
        hook.register(net)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9})

    def step():
        with autograd.record():
            loss = loss_fn(net(x), y).mean()
        loss.backward()
        trainer.step(1)

    for _ in range(3):
        step()
    mx.nd.waitall()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    mx.nd.waitall()
    dt = (time.perf_counter() - t0) / steps
    if hook is not None:
        hook.close()
        assert not hook.errors, hook.errors
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    probe = make_cnn(False)
    probe(mx.nd.zeros((1, 3, 32, 32)))
    n_params = sum(p.data().size for p in probe.collect_params().values())
    print(f"mxnet {mx.__version__}, CNN 3x32x32 -> 10, batch {args.batch}, {args.steps} steps x {args.repeats} repeats, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} (params: {n_params})")
    with tempfile.TemporaryDirectory() as root:
        for hybridize in (False, True):
            run(None, hybridize, 5, args.batch, root)  # warm-up: first-use costs (kernels, allocator)
            times = {k: [] for k in CONFIGS}
            for _ in range(args.repeats):
                for name, cfg in CONFIGS.items():  # interleaved: load changes hit every config alike
                    times[name].append(run(cfg, hybridize, args.steps, args.batch, root))
            print(f"\n{'hybridized' if hybridize else 'imperative'}:")
            for name in CONFIGS:
                med = statistics.median(times[name])
                paired = statistics.median(t / b for t, b in zip(times[name], times["off"]))
                print(f"  {name:32s} {med * 1e3:8.2f} ms/step   ratio {paired:5.3f}x "
                      f"(median of per-repeat ratios; min {min(times[name]) * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
