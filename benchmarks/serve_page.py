"""`tensortap serve` at scale: page-open time of a 10,000-step x 1,000-tensor run, update latency on
a growing run, and memory over time with a tab left open on it.

    python benchmarks/serve_page.py [--steps 10000] [--tensors 1000] [--minutes 60] [--sample 60]
                                    [--opens 5] [--updates 20] [--keep DIR]

1. Generates a run of --steps steps x --tensors tensors (8 scalars among them: losses, metrics,
   with a one-step spike; the rest 8-float weights) and two live-rule results per step (one fires
   every 500 steps, one is skipped on odd steps), through the store writer.
2. Starts `tensortap serve` on the folder (a subprocess, as a user would) and a headless Chromium
   (tests/core/tt_browser.py). Page open: time from navigation to every panel drawn (the page
   records it, performance.now() since navigation start), the first open after the server started
   (cold) and the median of --opens fresh tabs (warm).
3. A second run grows in the same folder (the benchmark writes a step of --tensors tensors every
   --every seconds, with rule results) while a tab shows it: update latency is the time from a
   step being on disk (flushed) to the page showing it (median, p95, max of --updates steps).
4. For --minutes the run keeps growing and the tab stays open; every --sample seconds: the tab's
   JS heap after a garbage collection, its DOM node count, the server's resident memory and CPU,
   the run's steps, and the update latency of the latest step. Prints the table and the slope.
Needs Chromium (apt-get install chromium). Numbers are taken on a shared machine: say so.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from tensortap.rules.base import RuleResult, results_record  # noqa: E402
from tensortap.store import StepBatch, StoreWriter, TensorItem  # noqa: E402
from tests.core.tt_browser import CHROMIUM, Browser  # noqa: E402
from tests.core.tt_serve_helpers import get_json  # noqa: E402

SCALARS = [("loss", "losses"), ("accuracy", "metrics"), ("lr", "scalars"), ("grad_norm", "scalars"),
           ("val_loss", "losses"), ("val_accuracy", "metrics"), ("throughput", "scalars"), ("weight_norm", "scalars")]


class RunWriter:
    """Writes steps of `tensors` tensors (8 scalars, the rest small weights) and rule results."""

    def __init__(self, root: str, tensors: int) -> None:
        self.w = StoreWriter(root, 0, queue_bytes=64 << 20)
        self.names = [f"layer{i // 2}.{('weight', 'bias')[i % 2]}" for i in range(tensors - len(SCALARS))]
        self.base = np.arange(8, dtype=np.float32)
        self.step = 0

    def add(self, n: int = 1) -> None:
        for _ in range(n):
            s = self.step
            items = [TensorItem(name, "value", ("weights",), self.base + (s + i) * 1e-3)
                     for i, name in enumerate(self.names)]
            for k, (name, coll) in enumerate(SCALARS):
                v = np.float32(1.0 / (1 + s / 500) + 0.01 * np.sin(s / 7 + k) + (50.0 if s == 7321 and k == 0 else 0))
                items.append(TensorItem(name, "value", (coll,), v))
            self.w.submit(StepBatch(s, "train", s, items, time=time.time()))
            self.w.submit_record(results_record([
                RuleResult("loss_spike", s, s % 500 == 499, f"loss at step {s}"),
                RuleResult("needs_outputs", s, False,
                           "skipped: no outputs saved at this step" if s % 2 else "checked 3", skipped=bool(s % 2))]))
            self.step += 1

    def flush(self) -> None:
        self.w.flush()

    def close(self) -> None:
        self.w.close()


def generate(root: str, steps: int, tensors: int) -> float:
    t0 = time.perf_counter()
    w = RunWriter(root, tensors)
    w.add(steps)
    w.close()
    return time.perf_counter() - t0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(folder: str):
    path = [os.path.join(ROOT, "core")] + os.environ.get("PYTHONPATH", "").split(os.pathsep)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    p = subprocess.Popen([sys.executable, "-m", "tensortap.cli", "serve", folder, "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    t0 = time.monotonic()
    url = None
    while url is None:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError("tensortap serve did not start")
        if "open http" in line:
            url = line.split("open ", 1)[1].strip()
    return p, url, t0


def open_run(b: Browser, url: str) -> float:
    """ms from navigation to every panel of the run page drawn."""
    r = b.open(url, settle=0.0)
    v, _ = b.wait_for(r["session"], "document.documentElement.dataset.ttDrawn", timeout=120, poll=0.02)
    b.close_tab(r["session"])
    return float(v)


def shown_steps(b: Browser, sid: str) -> int:
    txt = b.evaluate(sid, "document.querySelector('dl.facts dd')?.textContent || ''")
    try:
        return int(txt.split()[0])
    except (ValueError, IndexError):
        return -1


def latency(b: Browser, sid: str, w: RunWriter, timeout: float = 30.0) -> float:
    """Seconds from a new step on disk to the page showing it."""
    w.add(1)
    w.flush()
    t_disk = time.monotonic()
    want = w.step
    while shown_steps(b, sid) < want:
        if time.monotonic() - t_disk > timeout:
            return float("inf")
        time.sleep(0.01)
    return time.monotonic() - t_disk


def pct(xs: List[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--tensors", type=int, default=1_000)
    ap.add_argument("--opens", type=int, default=5)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=60.0, help="how long the tab stays open on the growing run")
    ap.add_argument("--sample", type=float, default=60.0, help="seconds between memory samples")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between steps of the growing run")
    ap.add_argument("--keep", default=None, help="folder to keep the generated run in (reused when present)")
    args = ap.parse_args()
    if CHROMIUM is None:
        sys.exit("needs Chromium: apt-get install -y chromium")
    folder = args.keep or tempfile.mkdtemp(prefix="tt-serve-bench-")
    big = os.path.join(folder, "big")
    grow = os.path.join(folder, "growing")
    if not os.path.isdir(big):
        print(f"generating {args.steps} steps x {args.tensors} tensors ...", flush=True)
        print(f"  written in {generate(big, args.steps, args.tensors):.0f} s", flush=True)
    shutil.rmtree(grow, ignore_errors=True)
    writer = RunWriter(grow, args.tensors)
    writer.add(10)
    writer.flush()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared: other jobs run)")
    server, url, t_start = start_server(folder)
    b = Browser()
    try:
        runs = {}
        while len(runs) < 2 or any(r["state"] == "opening" for r in runs.values()):
            runs = {r["name"]: r for r in get_json(url + "api/runs")["runs"]}
            time.sleep(0.05)
        print(f"server: both runs open {time.monotonic() - t_start:.2f} s after start "
              f"(reads the index, warms the scalar series); resident {rss_mb(server.pid):.0f} MB")
        page = url + f"#/run/{runs['big']['id']}"
        cold = open_run(b, page)
        warm = [open_run(b, page) for _ in range(args.opens)]
        print(f"page open, {runs['big']['steps']} steps x {runs['big']['tensors']} tensors: first {cold / 1e3:.2f} s, "
              f"then median {statistics.median(warm) / 1e3:.2f} s "
              f"(min {min(warm) / 1e3:.2f}, max {max(warm) / 1e3:.2f}; "
              f"{args.opens} fresh tabs)")
        r = b.open(url + f"#/run/{runs['growing']['id']}", settle=0.0)
        sid = r["session"]
        b.wait_for(sid, "document.documentElement.dataset.ttDrawn", timeout=60)
        lat = []
        for _ in range(args.updates):
            lat.append(latency(b, sid, writer))
            time.sleep(0.2)
        print(f"update latency (step on disk -> shown, {args.updates} steps): median {statistics.median(lat):.2f} s, "
              f"p95 {pct(lat, 0.95):.2f} s, max {max(lat):.2f} s")
        # a tab left open on a growing run
        print(f"\n{'min':>6} {'steps':>7} {'tab heap MB':>12} {'DOM nodes':>10} {'server MB':>10} {'server CPU %':>13} "
              f"{'latency s':>10}", flush=True)
        rows = []
        t0 = time.monotonic()
        c0 = cpu_s(server.pid)
        next_sample = 0.0
        last_cpu, last_t = c0, t0
        while True:
            el = time.monotonic() - t0
            if el >= next_sample:
                heap = b.heap(sid)
                metrics = b.send("Performance.getMetrics", session=sid)["metrics"]
                nodes = {m["name"]: m["value"] for m in metrics}["Nodes"]
                now_cpu, now_t = cpu_s(server.pid), time.monotonic()
                cpu = 100 * (now_cpu - last_cpu) / max(1e-9, now_t - last_t)
                last_cpu, last_t = now_cpu, now_t
                lt = latency(b, sid, writer)
                rows.append((el / 60, writer.step, heap, nodes, rss_mb(server.pid), cpu, lt))
                print(f"{el / 60:6.1f} {writer.step:7d} {heap:12.1f} {nodes:10.0f} {rows[-1][4]:10.0f} {cpu:13.0f} "
                      f"{lt:10.2f}", flush=True)
                next_sample += args.sample
                if el >= args.minutes * 60:
                    break
            writer.add(1)
            writer.flush()
            time.sleep(args.every)
        if len(rows) >= 3:
            mins = np.array([x[0] for x in rows])
            later = mins >= mins[-1] / 4  # after the first quarter: the page's caches are filled
            for i, what in ((2, "tab JS heap"), (4, "server resident")):
                ys = np.array([x[i] for x in rows])
                slope = np.polyfit(mins[later], ys[later], 1)[0] * 60 if later.sum() >= 2 else float("nan")
                print(f"{what}: {ys[0]:.1f} MB at start, {ys[later][0]:.1f} -> {ys[-1]:.1f} MB over the last "
                      f"{mins[-1] - mins[later][0]:.0f} min ({slope:+.1f} MB/hour)")
            print(f"steps grew {rows[0][1]} -> {rows[-1][1]}; the server holds the run's index "
                  f"({args.tensors} entries x 26 bytes a step), so its memory follows the run's size")
    finally:
        b.close()
        server.terminate()
        server.wait(timeout=10)
        writer.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
