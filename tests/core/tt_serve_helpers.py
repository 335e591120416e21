"""What the `tensortap serve` tests share: a training process that writes steps when told to (run
as a script), and small helpers to talk to a server.

    python tests/core/tt_serve_helpers.py RUN_DIR CONTROL_FILE ACK_FILE

The process trains a NumpyMLP through tt.Hook, one step at a time up to the step the control file
names ("<target> <low>": low=1 makes the saved accuracy drop below the live rule's floor, so it
fires), flushes, waits for the live rule to have judged the last step, and writes that step to the
ack file. "stop" closes the hook and exits.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Optional, Tuple

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def get(url: str, headers: Optional[dict] = None, method: str = "GET") -> Tuple[int, dict, bytes]:
    """(status, headers, body) of one request (errors too: never raises for an HTTP status)."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str, **kw) -> dict:
    status, _, body = get(url, **kw)
    assert status < 500, (status, body[:300])
    return json.loads(body)


def run_ids(base: str, token: str = "") -> dict:
    """run name -> id, from the server's runs list (waits for the first scan)."""
    for _ in range(100):
        d = get_json(base + "api/runs" + (f"?token={token}" if token else ""))
        if d["runs"] and all(r["state"] != "opening" for r in d["runs"]):
            return {r["name"]: r["id"] for r in d["runs"]}
        time.sleep(0.1)
    raise TimeoutError("no run listed")


class Writer:
    """The training process, driven step by step from the test."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.control = run_dir.rstrip("/") + ".control"
        self.ack = run_dir.rstrip("/") + ".ack"
        self._put(self.control, "0 0")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), run_dir, self.control, self.ack],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    @staticmethod
    def _put(path: str, text: str) -> None:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    def advance(self, target: int, low: bool = False, timeout: float = 60.0) -> float:
        """Have steps up to `target` - 1 written (and judged by the live rule); returns the time
        (time.monotonic) they were on disk."""
        self._put(self.control, f"{target} {int(low)}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.ack) as f:
                    if int(f.read().strip() or -1) >= target - 1:
                        return time.monotonic()
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("the writer died: " + self.proc.stdout.read().decode(errors="replace")[-2000:])
            time.sleep(0.01)
        raise TimeoutError(f"the writer did not reach step {target - 1}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self._put(self.control, "stop")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _main(run_dir: str, control: str, ack: str) -> None:
    import numpy as np

    import tensortap as tt
    from tensortap.rules import Rule
    from tensortap.testing import NumpyMLP, make_data

    class AccuracyFloor(Rule):
        """Fires when the saved accuracy is below the floor."""

        name = "accuracy_floor"

        def __init__(self, floor: float = 0.5) -> None:
            super().__init__()
            self.floor = floor
            self.seen = -1

        def invoke_at_step(self, trial, step):
            try:
                if "accuracy" not in trial.tensor_names(step=step):
                    return False, "no accuracy saved at this step"
                acc = float(trial.tensor("accuracy").value(step))
                return acc < self.floor, f"accuracy {acc:.3f} {'<' if acc < self.floor else '>='} {self.floor}"
            finally:
                self.seen = step

    hook = tt.Hook(run_dir, include_collections=["weights", "gradients", "losses", "scalars"],
                   save_config=tt.SaveConfig(save_interval=1))
    rule = AccuracyFloor()
    hook.add_rule(rule)
    model = NumpyMLP(seed=0)
    hook.register(model)
    hook.register_loss(model)
    x, y = make_data(256, seed=1)
    step = 0
    while True:
        try:
            with open(control) as f:
                cmd = f.read().split()
        except OSError:
            cmd = []
        if cmd[:1] == ["stop"]:
            break
        target, low = (int(cmd[0]), int(cmd[1])) if len(cmd) == 2 else (step, 0)
        if step >= target:
            time.sleep(0.01)
            continue
        while step < target:
            j = (step * 32) % 256
            model.train_step(x[j:j + 32], y[j:j + 32], lr=0.3)
            hook.save_scalar("accuracy", 0.3 if low else 0.9 - 0.1 * np.exp(-step / 10))
            step += 1
        hook.flush()  # hands the last step over: written, and judged by the live rule
        deadline = time.monotonic() + 30
        while rule.seen < step - 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        hook.flush()
        Writer._put(ack, str(step - 1))
    hook.close()


if __name__ == "__main__":
    _main(*sys.argv[1:4])
