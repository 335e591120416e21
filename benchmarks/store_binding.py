"""What binding each data record to its index entry costs (store format 3, docs/store.md).

Every data record's CRC32C is seeded with a 44-byte binding (writer, rank, segment, step, name
id, offset): one struct.pack and one CRC of 44 bytes more per record, on write and on read. This
writes and reads the same steps with the real binding and with a stub returning 0 (what an
unbound, format-2 record's checksum is), alternated in one process so machine load hits both
alike, and prints medians and the ratio (> 1: the binding is slower).

  python benchmarks/store_binding.py [--steps 200] [--tensors 50] [--kb 4] [--reps 7]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import numpy as np

import tensortap as tt
from tensortap.store import StepBatch, StoreWriter, TensorItem, framing

REAL = framing.binding


def _stub(*_args) -> int:
    return 0


def write(root: str, steps: int, arrays) -> float:
    t0 = time.perf_counter()
    w = StoreWriter(root, 0)
    for s in range(steps):
        w.submit(StepBatch(s, "train", s, [TensorItem(f"t{i}", "value", ("bench",), a) for i, a in enumerate(arrays)]))
    w.close()
    return time.perf_counter() - t0


def read(root: str, steps: int, n: int) -> float:
    t0 = time.perf_counter()
    trial = tt.create_trial(root)
    for s in range(steps):
        for i in range(n):
            trial.tensor(f"t{i}").value(s)
    trial.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tensors", type=int, default=50, help="tensors per step")
    ap.add_argument("--kb", type=int, default=4, help="size of each tensor in KB")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(args.kb * 256).astype(np.float32) for _ in range(args.tensors)]
    times = {(k, f): [] for k in ("bound", "stub") for f in ("write", "read")}
    base = tempfile.mkdtemp(prefix="tt-bind-")
    try:
        for rep in range(args.reps):
            for kind in (("bound", "stub") if rep % 2 == 0 else ("stub", "bound")):
                framing.binding = REAL if kind == "bound" else _stub
                root = f"{base}/{kind}{rep}"
                times[(kind, "write")].append(write(root, args.steps, arrays))
                times[(kind, "read")].append(read(root, args.steps, args.tensors))
                shutil.rmtree(root)
    finally:
        framing.binding = REAL
        shutil.rmtree(base, ignore_errors=True)
    records = args.steps * args.tensors
    print(f"{records} records of {args.kb} KB, {args.reps} reps alternated, medians")
    for f in ("write", "read"):
        b, s = (statistics.median(times[(k, f)]) for k in ("bound", "stub"))
        print(f"{f:>5}: bound {b * 1e3:8.1f} ms   stub {s * 1e3:8.1f} ms   ratio {b / s:5.3f}   "
              f"{(b - s) / records * 1e6:+.2f} us/record")


if __name__ == "__main__":
    main()
