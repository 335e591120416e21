"""Shared helpers for the core and fault tests: a numpy MLP training loop that snapshots what the
model held, fault-injecting fsspec file systems (disk full, slow disk), and run-tree listing."""
from __future__ import annotations

import errno
import os
import threading
import time
from typing import Dict, List, Optional

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

import tensortap as tt
from tensortap.testing import NumpyMLP, make_data


def train_mlp(run_dir: str, steps: int = 30, save_interval: int = 10, seed: int = 0,
              include=("weights", "biases", "gradients", "losses"), **hook_kwargs) -> Dict[int, dict]:
    """Train the numpy MLP `steps` steps with a Hook; return per step the params the forward
    used, the gradients the backward produced, and the loss, taken independently of tensortap."""
    model = NumpyMLP(seed=seed)
    hook = tt.Hook(run_dir, include_collections=list(include),
                   save_config=hook_kwargs.pop("save_config", tt.SaveConfig(save_interval=save_interval)),
                   **hook_kwargs)
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(256, seed=seed + 1)
    snaps: Dict[int, dict] = {}
    for s in range(steps):
        xb, yb = x[(s * 8) % 248:(s * 8) % 248 + 8], y[(s * 8) % 248:(s * 8) % 248 + 8]
        params = {k: v.copy() for k, v in model.params.items()}
        loss = model.loss(model.forward(xb), yb)
        model.backward()
        snaps[s] = {"params": params, "grads": {k: v.copy() for k, v in model.grads.items()},
                    "loss": np.float32(loss)}
        model.sgd_step(0.1)
    hook.close()
    return snaps


def tree(root: str) -> List[str]:
    """Every path under `root` (relative), sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


# ---- fault-injecting file systems ---------------------------------------------------------------
class _Proxy:
    """A writable file whose writes consult the file system's fault switches."""

    def __init__(self, f, fs: "FaultyFS") -> None:
        self._f = f
        self._fs = fs

    def write(self, data) -> int:
        fs = self._fs
        n = memoryview(data).nbytes
        if fs.full.is_set():
            FaultyFS.enospc_raised += 1
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        if fs.bytes_per_second:
            time.sleep(n / fs.bytes_per_second)
        if fs.delay_per_write:
            time.sleep(fs.delay_per_write)
        return self._f.write(data)

    def flush(self) -> None:
        if self._fs.full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


class FaultyFS(LocalFileSystem):
    """Local files behind the URL `faulty://<abs path>`, with switches shared by every instance:
    `full` (writes raise ENOSPC), `bytes_per_second` / `delay_per_write` (a slow disk)."""

    protocol = "faulty"
    root_marker = "/"
    full = threading.Event()
    bytes_per_second: float = 0.0
    delay_per_write: float = 0.0
    enospc_raised = 0
    cachable = False

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("faulty://"):
            path = path[len("faulty://"):]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode=mode, **kwargs)
        return _Proxy(f, self) if any(c in mode for c in "wax") else f

    @classmethod
    def reset(cls) -> None:
        cls.full.clear()
        cls.bytes_per_second = 0.0
        cls.delay_per_write = 0.0
        cls.enospc_raised = 0


fsspec.register_implementation("faulty", FaultyFS, clobber=True)


def wait_until(pred, timeout: float = 10.0, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return bool(pred())


def rss_bytes() -> Optional[int]:
    """Resident memory of this process (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None
