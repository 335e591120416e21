"""Store throughput vs np.save / np.load and vs `dd` on the same disk (issue 2).

For each array size (4 KB .. 64 MB of float32) it writes the same arrays three ways, side by
side, five times, and prints medians and ratios:

  store write   StoreWriter: framing + CRC32C + index, background thread, until flushed
  np.save       one .npy file per array (what a hand-rolled dump does)
  dd            sequential write of the same byte count (page cache, and with fdatasync)
  store read    create_trial + Tensor.value() of every array (checksum verified)
  np.load       np.load of every .npy file

Nothing is fsync'ed except the `dd conv=fdatasync` reference line; all reads are warm (page
cache), as right after training. Usage:

  python benchmarks/store_throughput.py [--total-mb 256] [--reps 5] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np

import tensortap as tt
from tensortap.store import StepBatch, StoreWriter, TensorItem

SIZES = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]
STEP_BYTES = 64 << 20  # arrays are grouped into steps of at most this many bytes


def _label(n: int) -> str:
    return f"{n >> 20} MB" if n >= 1 << 20 else f"{n >> 10} KB"


def _steps_of(arrays):
    """Group arrays into steps of at most STEP_BYTES: [(step, [(index, array)])]."""
    out, items, size = [], [], 0
    for i, a in enumerate(arrays):
        items.append((i, a))
        size += a.nbytes
        if size >= STEP_BYTES:
            out.append((len(out), items))
            items, size = [], 0
    if items:
        out.append((len(out), items))
    return out


def store_write(root: str, arrays) -> float:
    t0 = time.perf_counter()
    w = StoreWriter(root, 0)
    for step, items in _steps_of(arrays):
        w.submit(StepBatch(step, "train", step, [TensorItem(f"t{i}", "value", ("bench",), a) for i, a in items]))
    w.close()
    return time.perf_counter() - t0


def store_read(root: str, arrays) -> float:
    where = [(i, step) for step, items in _steps_of(arrays) for i, _ in items]
    t0 = time.perf_counter()
    trial = tt.create_trial(root)
    total = 0
    for i, step in where:
        total += trial.tensor(f"t{i}").value(step).nbytes
    trial.close()
    return time.perf_counter() - t0


def npy_write(d: str, arrays) -> float:
    os.makedirs(d)
    t0 = time.perf_counter()
    for i, a in enumerate(arrays):
        np.save(os.path.join(d, f"t{i}.npy"), a)
    return time.perf_counter() - t0


def npy_read(d: str, n: int) -> float:
    t0 = time.perf_counter()
    total = 0
    for i in range(n):
        total += np.load(os.path.join(d, f"t{i}.npy")).nbytes
    return time.perf_counter() - t0


def dd(path: str, nbytes: int, sync: bool) -> float:
    bs = 1 << 20
    count = max(1, nbytes // bs)
    cmd = ["dd", "if=/dev/zero", f"of={path}", f"bs={bs}", f"count={count}"] + (["conv=fdatasync"] if sync else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    dt = time.perf_counter() - t0
    os.remove(path)
    return dt * nbytes / (count * bs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total-mb", type=int, default=256, help="bytes written per size and method (default 256 MB)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="directory on the disk to measure (default: the temp dir)")
    ap.add_argument("--max-count", type=int, default=4096, help="at most this many arrays per size (np.save of"
                    " thousands of small files is slow)")
    ap.add_argument("--sizes", default=None, help="comma-separated array sizes in KB (default 4,64,1024,16384,65536)")
    args = ap.parse_args()
    sizes = [int(s) << 10 for s in args.sizes.split(",")] if args.sizes else SIZES
    total = args.total_mb << 20
    base = tempfile.mkdtemp(prefix="tt-bench-", dir=args.dir)
    print(f"disk: {base}   {args.reps} reps, median; MB/s = 2^20 bytes/s; ratios > 1 mean the store is faster")
    hdr = (f"{'array':>7} {'count':>6} | {'store W':>8} {'np.save':>8} {'W ratio':>7} | {'dd':>7} {'dd sync':>7} "
           f"{'vs dd':>6} | {'store R':>8} {'np.load':>8} {'R ratio':>7}")
    print(hdr)
    print("-" * len(hdr))
    try:
        for size in sizes:
            n = max(3, min(total // size, args.max_count))
            rng = np.random.default_rng(size)
            arrays = [rng.standard_normal(size // 4).astype(np.float32) for _ in range(min(n, 8))]
            arrays = [arrays[i % len(arrays)] for i in range(n)]  # same bytes, bounded memory
            nbytes = n * size
            res = {k: [] for k in ("sw", "nw", "sr", "nr", "dd", "dds")}
            for rep in range(args.reps):
                sroot, nroot = os.path.join(base, f"s{rep}"), os.path.join(base, f"n{rep}")
                # alternate the order so neither method always meets a fuller page cache
                order = [("s", sroot), ("n", nroot)] if rep % 2 == 0 else [("n", nroot), ("s", sroot)]
                for kind, d in order:
                    if kind == "s":
                        res["sw"].append(store_write(d, arrays))
                    else:
                        res["nw"].append(npy_write(d, arrays))
                if rep % 2 == 0:
                    res["sr"].append(store_read(sroot, arrays))
                    res["nr"].append(npy_read(nroot, n))
                else:
                    res["nr"].append(npy_read(nroot, n))
                    res["sr"].append(store_read(sroot, arrays))
                res["dd"].append(dd(os.path.join(base, "dd"), nbytes, sync=False))
                res["dds"].append(dd(os.path.join(base, "dd"), nbytes, sync=True))
                shutil.rmtree(sroot)
                shutil.rmtree(nroot)
            mbps = {k: nbytes / statistics.median(v) / 2 ** 20 for k, v in res.items()}
            print(f"{_label(size):>7} {n:>6} | {mbps['sw']:>8.0f} {mbps['nw']:>8.0f} {mbps['sw'] / mbps['nw']:>7.2f} | "
                  f"{mbps['dd']:>7.0f} {mbps['dds']:>7.0f} {mbps['sw'] / mbps['dd']:>6.2f} | "
                  f"{mbps['sr']:>8.0f} {mbps['nr']:>8.0f} {mbps['sr'] / mbps['nr']:>7.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("W ratio = store write / np.save; vs dd = store write / dd (page cache); R ratio = store read / np.load."
          " Target: W ratio >= 0.8 and R ratio >= 0.8 at every size.")


if __name__ == "__main__":
    main()
