"""The plugin registers and imports without mxnet (runs in every venv)."""
from __future__ import annotations

import subprocess
import sys

from tensortap.plugins import get_registry


def test_registered_and_importable_without_importing_mxnet():
    spec = get_registry().adapters.get("mxnet")
    assert spec is not None and spec.conformance == "tensortap_mxnet.conformance:Kit"
    code = ("import sys, tensortap_mxnet, tensortap_mxnet.plugin, tensortap_mxnet.adapter, "
            "tensortap_mxnet.conformance; "
            "assert 'mxnet' not in sys.modules, 'mxnet imported at module level'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
