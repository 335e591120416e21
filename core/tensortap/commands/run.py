"""`tensortap run [--config FILE] [--out DIR] -- python train.py ARGS...`: run a training script
nobody edited with a hook attached from a configuration file (see tensortap.zerocode).

The configuration is checked before the script starts (exit 2 on a bad one); the script's own
exit status is returned; at the end the run's path and its rules' summary are printed."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from typing import List

SITE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zerocode", "site")
DEFAULT_CONFIG = "tensortap.toml"


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a training script unchanged, with a hook attached from a configuration file",
        description="Run COMMAND (e.g. `python train.py --lr 0.1`, `python -m pkg.train`, `torchrun ...`) with "
                    "tensortap attached to the model it trains. The configuration mirrors tt.Hook's arguments "
                    "(TOML, JSON or YAML), or is smdebug's JSON hook configuration.")
    p.add_argument("--config", default=None,
                   help=f"configuration file (default: ./{DEFAULT_CONFIG} if it exists, else tt.Hook's defaults)")
    p.add_argument("--out", default=None, help="run directory (overrides out_dir of the configuration)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    p.set_defaults(func=run_command)


def _default_out(command: List[str]) -> str:
    script = next((a for a in command[1:] if a.endswith(".py")), None) or command[-1]
    stem = os.path.splitext(os.path.basename(script))[0] or "run"
    return os.path.join("tensortap-runs", f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def run_command(args) -> int:
    from ..errors import ConfigError
    from ..store.fs import run_location
    from ..zerocode import boot
    from ..zerocode.prepare import prepare
    from ..zerocode.report import finish

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no command to run: `tensortap run [--config FILE] -- python train.py ARGS...`")
    status_dir = tempfile.mkdtemp(prefix="tensortap-run-")
    config = args.config
    if config is None:
        if os.path.exists(DEFAULT_CONFIG):
            config = DEFAULT_CONFIG
        else:
            config = os.path.join(status_dir, "defaults.json")
            with open(config, "w", encoding="utf-8") as f:
                f.write("{}\n")
    info = prepare(config, args.out, _default_out(command))  # a bad configuration stops here, before the script starts
    out = run_location(info["out_dir"])
    env = dict(os.environ)
    env[boot.CONFIG_ENV] = os.path.abspath(config)
    env[boot.OUT_ENV] = out
    env[boot.PREPARED_ENV] = json.dumps(info["watch"])
    env[boot.STATUS_ENV] = status_dir
    env.pop(boot.ROOT_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([SITE_DIR] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as e:
        raise ConfigError(f"cannot start {command[0]!r}: {e.strerror or e}") from None
    rc = _wait(proc)
    finish(status_dir, out, cleanup=True)
    return rc


def _wait(proc: subprocess.Popen) -> int:
    """Wait for the child and return its status (a signal N as 128+N, as shells report it).
    Ctrl-C reaches the child from the terminal (its process group): this process waits for it to
    close its run instead of dying first; a SIGTERM sent to this process is passed on."""
    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except OSError:
            pass

    old = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
           signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 128 - rc if rc < 0 else rc
