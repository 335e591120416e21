"""Runs a training script in a fresh Python whose framework reports another `__version__` (set
before tensortap loads the plugin's adapter), for the supported-version checks of each plugin."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List

import tensortap

WARNING = "FrameworkVersionWarning: "
#: what each training script saves: tt.Hook(HOOK_ARGS)
HOOK_ARGS = ('sys.argv[1], include_collections=["weights", "gradients", "losses"], '
             'save_config=tt.SaveConfig(save_interval=1)')


def expected_warning(distribution: str, module: str, supported: str, fake: str) -> str:
    """The one warning a plugin gives for `module` at version `fake`, outside `supported`."""
    return (f"{distribution} {tensortap.__version__} supports {module} {supported}, but {module} {fake} is "
            f"installed: capture may fail or be wrong. Install a supported version (pip install "
            f"'{module}{supported}') or a {distribution} release that supports {module} {fake}. (Shown once; "
            "silence it with warnings.filterwarnings('ignore', category=tensortap.FrameworkVersionWarning).)")


def run_with_versions(script: str, fakes: Dict[str, str], *args: str,
                      timeout: int = 300) -> subprocess.CompletedProcess:
    """`script` run after `import M; M.__version__ = V` for each fake (none: the real versions)."""
    prelude = "".join(f"import {m}; {m}.__version__ = {v!r}\n" for m, v in fakes.items())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", prelude + script, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def version_warnings(stderr: str) -> List[str]:
    """The FrameworkVersionWarning messages a run printed."""
    return [line.split(WARNING, 1)[1] for line in stderr.splitlines() if WARNING in line]
