"""Runs a training script in a fresh Python whose framework reports another `__version__` (set
before tensortap loads the plugin's adapter), for the supported-version checks of each plugin."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List

WARNING = "FrameworkVersionWarning: "


def run_with_versions(script: str, fakes: Dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`script` run after `import M; M.__version__ = V` for each fake (none: the real versions)."""
    prelude = "".join(f"import {m}; {m}.__version__ = {v!r}\n" for m, v in fakes.items())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", prelude + script, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def version_warnings(stderr: str) -> List[str]:
    """The FrameworkVersionWarning messages a run printed."""
    return [line.split(WARNING, 1)[1] for line in stderr.splitlines() if WARNING in line]
