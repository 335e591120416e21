"""`tensortap plugins` tells a framework plugin whose framework is not installed from one that
works, and names the extra that installs it (torch's import blocked in a subprocess, as if it
were not installed)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

BLOCKED = ("import sys; sys.modules[sys.argv[1]] = None; from tensortap.cli import main; "
           "sys.exit(main(sys.argv[2:]))")


def plugins_without(module: str, *args: str) -> subprocess.CompletedProcess:
    """`tensortap plugins ARGS` in a Python where `import MODULE` fails as if it were not installed."""
    return subprocess.run([sys.executable, "-c", BLOCKED, module, "plugins", *args],
                          capture_output=True, text=True, timeout=120)


def line_of(out: str, plugin: str) -> str:
    return next(x for x in out.splitlines() if x.startswith(f"{plugin}  ["))


def test_a_plugin_without_its_framework_says_so_and_names_the_extra():
    pytest.importorskip("tensortap_torch")
    r = plugins_without("torch")
    assert r.returncode == 0, r.stderr
    line = line_of(r.stdout, "torch")
    assert line.endswith("framework missing: torch is not installed: pip install 'tensortap-torch[framework]'"), line
    assert not line.endswith(" ok")
    assert line_of(r.stdout, "tensortap.rules.builtin").endswith(" ok")  # the others are unaffected

    r = plugins_without("torch", "--json")
    info = {p["name"]: p for p in json.loads(r.stdout)}
    assert info["torch"]["framework_missing"] == "torch is not installed: pip install 'tensortap-torch[framework]'"
    assert info["torch"]["error"] is None and info["tensortap.rules.builtin"]["framework_missing"] is None


def test_a_plugin_with_its_framework_is_ok():
    pytest.importorskip("torch")
    pytest.importorskip("tensortap_torch")
    r = subprocess.run([sys.executable, "-m", "tensortap.cli", "plugins"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert line_of(r.stdout, "torch").endswith("]  ok")
