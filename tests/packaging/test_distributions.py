"""Packaging as users meet it: every distribution builds offline into an sdist and a wheel that hold
its package, py.typed, README, LICENSE and entry points (opened here with zipfile/tarfile, apart
from tools/dist.py's own checks); one version for all, sibling pins that match, and framework extras
that install what each plugin's SupportedVersions constants state."""
from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import tensortap

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import versions  # noqa: E402

if importlib.util.find_spec("build") is None or importlib.util.find_spec("twine") is None:
    pytest.skip("needs build and twine (requirements/tools.txt)", allow_module_level=True)

V = tensortap.__version__
PIN = f"<{'0.' + str(int(V.split('.')[1]) + 1) if V.startswith('0.') else int(V.split('.')[0]) + 1},>={V}"
#: distribution -> (its package, its entry points as entry_points.txt lines, sibling requirements)
EXPECTED = {
    "tensortap": ("tensortap", ["[console_scripts]", "tensortap = tensortap.cli:main",
                                "[pytest11]", "tensortap = tensortap.testing.fixtures"], []),
    "tensortap-torch": ("tensortap_torch", ["[tensortap]", "torch = tensortap_torch.plugin"], ["tensortap"]),
    "tensortap-tensorflow": ("tensortap_tensorflow", ["[tensortap]", "tensorflow = tensortap_tensorflow.plugin"],
                             ["tensortap"]),
    "tensortap-mxnet": ("tensortap_mxnet", ["[tensortap]", "mxnet = tensortap_mxnet.plugin"], ["tensortap"]),
    "tensortap-pruning": ("tensortap_pruning", ["[tensortap]", "pruning = tensortap_pruning.plugin"],
                          ["tensortap", "tensortap-torch"]),
    "tensortap-rules-health": ("tensortap_rules_health",
                               ["[tensortap]", "rules_health = tensortap_rules_health.plugin"], ["tensortap"]),
}


def dist_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "dist.py"), *args], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_every_distribution_builds_and_carries_its_package_py_typed_readme_license_and_entry_points(tmp_path):
    r = dist_tool("--outdir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    license_text = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text
    for name, (pkg, entry_points, siblings) in EXPECTED.items():
        stem = f"{name.replace('-', '_')}-{V}"
        with zipfile.ZipFile(tmp_path / f"{stem}-py3-none-any.whl") as z:
            files = set(z.namelist())
            assert {f"{pkg}/__init__.py", f"{pkg}/py.typed", f"{stem}.dist-info/licenses/LICENSE"} <= files, name
            assert z.read(f"{stem}.dist-info/licenses/LICENSE") == license_text
            assert [x for x in z.read(f"{stem}.dist-info/entry_points.txt").decode().splitlines() if x] == entry_points
            meta = Parser().parsestr(z.read(f"{stem}.dist-info/METADATA").decode())
        assert meta["Name"] == name and meta["Version"] == V and meta["License-Expression"] == "Apache-2.0"
        assert meta.get_payload().startswith(f"# {name}\n"), name  # its own README as the description
        assert meta["Description-Content-Type"] == "text/markdown"
        assert any(u.startswith("Source, https://") for u in meta.get_all("Project-URL")), name
        assert "Typing :: Typed" in meta.get_all("Classifier") and meta["Author"]
        requires = meta.get_all("Requires-Dist") or []
        for sibling in siblings:
            assert f"{sibling}{PIN}" in requires, (name, requires)
        with tarfile.open(tmp_path / f"{stem}.tar.gz") as t:
            members = set(t.getnames())
        assert {f"{stem}/LICENSE", f"{stem}/README.md", f"{stem}/pyproject.toml", f"{stem}/{pkg}/py.typed"} <= members
    assert "6 distributions built" in r.stdout


def test_dist_reports_a_wheel_without_py_typed_or_with_another_license(tmp_path):
    broken = tmp_path / "tensortap-rules-health"
    shutil.copytree(ROOT / "contrib" / "tensortap-rules-health", broken,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (broken / "tensortap_rules_health" / "py.typed").unlink()
    (broken / "LICENSE").write_text("All rights reserved.\n")
    r = dist_tool("--outdir", str(tmp_path / "out"), str(broken))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"tensortap_rules_health-{V}-py3-none-any.whl: tensortap_rules_health/py.typed missing" in r.stderr
    assert "its LICENSE differs from the repository's LICENSE" in r.stderr


def test_versions_move_together_and_each_plugin_pins_the_core(tmp_path):
    assert versions.drift() == []
    assert [versions.read_version(d) for d in versions.distributions()] == [V] * 6
    for d in versions.distributions():  # the import name says the same as the metadata
        pkg = versions.version_file(d).parent.name
        assert importlib.import_module(pkg).__version__ == V

    # a copy where one plugin's version and one pin drifted: both named; --set moves everything together
    for sub in ("core", "plugins", "contrib"):
        shutil.copytree(ROOT / sub, tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    vf = versions.version_file(tmp_path / "plugins" / "tensortap-torch")
    vf.write_text(vf.read_text().replace(f'__version__ = "{V}"', '__version__ = "9.9.9"'))
    toml = tmp_path / "contrib" / "tensortap-pruning" / "pyproject.toml"
    toml.write_text(toml.read_text().replace('"tensortap-torch>=', '"tensortap-torch>=0.0.1,<9", "x>='))
    problems = versions.drift(tmp_path)
    drifted = f"plugins/tensortap-torch/tensortap_torch/__init__.py: tensortap-torch 9.9.9, but tensortap is {V}"
    assert drifted in problems
    assert any(p.startswith("contrib/tensortap-pruning/pyproject.toml: 'tensortap-torch>=0.0.1,<9'") for p in problems)
    versions.set_version("1.2.0", tmp_path)
    assert versions.drift(tmp_path) == []
    assert '"tensortap-torch>=1.2.0,<2"' in toml.read_text() and '"tensortap>=1.2.0,<2"' in toml.read_text()
    assert [versions.read_version(d) for d in versions.distributions(tmp_path)] == ["1.2.0"] * 6


def framework_extra(dist: str) -> list:
    return versions.pyproject(ROOT / dist)["project"]["optional-dependencies"]["framework"]


@pytest.mark.parametrize("dist, plugin", [("plugins/tensortap-torch", "tensortap_torch.plugin"),
                                          ("plugins/tensortap-tensorflow", "tensortap_tensorflow.plugin"),
                                          ("plugins/tensortap-mxnet", "tensortap_mxnet.plugin"),
                                          ("contrib/tensortap-pruning", "tensortap_torch.plugin")])
def test_the_framework_extra_installs_the_supported_range(dist, plugin):
    """The range lives in the plugin's SupportedVersions constant; the `framework` extra must ask pip
    for exactly it (importing plugin.py imports no framework)."""
    specs = importlib.import_module(plugin).tensortap_register_adapters()
    stated = [f"{v.pip_name}{v.supported}" for s in specs for v in s.versions if not v.optional]
    assert stated and set(stated) <= set(framework_extra(dist)), (stated, framework_extra(dist))


def test_each_distribution_has_a_readme_stating_its_supported_versions():
    for d in versions.distributions():
        text = (d / "README.md").read_text()
        name = versions.pyproject(d)["project"]["name"]
        assert text.startswith(f"# {name}\n") and "Apache-2.0" in text, d
        assert d.name == "core" or "## Supported versions" in text, d
        assert not re.search(r"\]\((?!https?://)[^)#]+\)", text), f"{d}/README.md: a relative link breaks on PyPI"
