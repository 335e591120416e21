"""Nanoseconds per call of what a framework adapter calls on every callback (tt.Capture).

    python benchmarks/capture_calls.py [--repeat 7] [--json]

Through the adapter's own session (`hook.adapter.session`), as a framework callback makes them:
`wants(category)` on an unsaved and a saved step, `capture(...)` of a tensor no collection
keeps, `capture(...)` of a kept 1 KB numpy array and, with torch installed, of a kept torch
tensor, `selects(name, category)`, and `begin_step()` of an unsaved step (the whole cost of a
step the hook does not save, with the numpy adapter's finish_step). Each figure is the best of
`--repeat` timeit runs (the least disturbed by other processes); compare two builds by running
this script under each, alternately, several times.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import timeit
from typing import Any, Callable, Dict

import numpy as np

import tensortap as tt
from tensortap.testing import NumpyMLP


def best_ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """The fastest of `repeat` runs of `number` calls, in ns per call."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e9


def session_of(hook: tt.Hook) -> Any:
    """What the hook's adapter captures through."""
    return hook.adapter.session


def measure(repeat: int) -> Dict[str, float]:
    out: Dict[str, float] = {}
    tmp = tempfile.mkdtemp()
    arr = np.arange(256, dtype=np.float32)
    # unsaved steps: the hook saves step 0 only
    hook = tt.Hook(f"{tmp}/unsaved", include_collections=["weights", "gradients"],
                   save_config=tt.SaveConfig(save_steps=[0]))
    hook.register(NumpyMLP())
    s = session_of(hook)
    s.begin_step()
    s.begin_step()  # step 1: unsaved
    out["wants, unsaved step"] = best_ns(lambda: s.wants("weights"), 1_000_000, repeat)
    out["capture, not kept"] = best_ns(lambda: s.capture("fc1.weight", arr, "weights"), 300_000, repeat)
    out["begin_step, unsaved step"] = best_ns(s.begin_step, 100_000, repeat)
    hook.close()
    # saved steps
    hook = tt.Hook(f"{tmp}/saved", include_collections=["weights", "gradients"],
                   save_config=tt.SaveConfig(save_interval=1))
    hook.register(NumpyMLP())
    s = session_of(hook)
    s.begin_step()
    out["wants, saved step"] = best_ns(lambda: s.wants("weights"), 1_000_000, repeat)
    out["capture, kept (1 KB numpy)"] = best_ns(lambda: s.capture("fc1.weight", arr, "weights"), 100_000, repeat)
    if hasattr(s, "selects"):
        out["selects(name, category)"] = best_ns(lambda: s.selects("fc1.weight", "weights"), 300_000, repeat)
    hook.close()
    try:
        import torch
    except ImportError:
        return out
    hook = tt.Hook(f"{tmp}/torch", include_collections=["weights"], save_config=tt.SaveConfig(save_interval=1))
    model = torch.nn.Linear(16, 16)
    hook.register(model)
    s = session_of(hook)
    s.begin_step()
    t = torch.arange(256, dtype=torch.float32)
    out["capture, kept (1 KB torch)"] = best_ns(lambda: s.capture("w", t, "weights"), 100_000, repeat)
    hook.close()
    return out


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print {call: ns} as JSON")
    args = ap.parse_args(argv)
    got = measure(args.repeat)
    if args.json:
        print(json.dumps(got))
    else:
        for k, v in got.items():
            print(f"{k:32s} {v:9.0f} ns/call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
