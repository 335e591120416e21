"""docs/writing-a-framework-plugin.md works as written: its files, built and installed into a temp
dir by pip, give a framework plugin that `tensortap plugins` lists, that passes the conformance
suite (from its own tests, and from tensortap's tests/conformance, which finds it installed), and
whose training script writes a run. The suite fails the same plugin with a capture bug."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "writing-a-framework-plugin.md"
PLUGIN = "tinynet-tensortap"


def doc_files():
    text = DOC.read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, flags=re.S))


def test_walkthrough_has_every_file_and_a_framework_as_long_as_it_says():
    files = doc_files()
    assert set(files) == {f"{PLUGIN}/{p}" for p in (
        "tinynet/__init__.py", "tensortap_tinynet/__init__.py", "tensortap_tinynet/adapter.py",
        "tensortap_tinynet/plugin.py", "tensortap_tinynet/conformance.py", "tests/test_conformance.py",
        "pyproject.toml", "train.py")}
    framework = [ln for ln in files[f"{PLUGIN}/tinynet/__init__.py"].splitlines() if ln.strip()]
    said = int(re.search(r"the\s+framework\s+is\s+a\s+(\d+)-line\s+one", DOC.read_text()).group(1))
    assert len(framework) == said, len(framework)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The doc's plugin, pip-installed into a fresh directory; (its folder, env finding it)."""
    pytest.importorskip("hatchling", reason="the walkthrough builds with hatchling")
    tmp = tmp_path_factory.mktemp("walkthrough")
    for rel, body in doc_files().items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(body)
    site = tmp / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(tmp / PLUGIN)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return tmp / PLUGIN, env


def run(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_tensortap_plugins_lists_it(installed):
    folder, env = installed
    out = run(["-m", "tensortap.cli", "plugins"], env, folder)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^tinynet\s+\[plugin, tinynet-tensortap 0\.1\.0\]\s+ok$", out.stdout, flags=re.M), out.stdout
    assert re.search(r"^\s+adapters: tinynet$", out.stdout, flags=re.M), out.stdout


def test_its_own_tests_run_the_conformance_suite_and_pass(installed):
    folder, env = installed
    out = run(["-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"], env, folder)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout, out.stdout


def test_tensortaps_conformance_suite_finds_it_installed_and_it_passes(installed):
    folder, env = installed
    out = run(["-m", "pytest", str(ROOT / "tests" / "conformance" / "test_conformance.py"), "-k", "tinynet",
               "-q", "-p", "no:cacheprovider"], env, ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout, out.stdout


def test_its_training_script_writes_a_run(installed, tmp_path):
    folder, env = installed
    out = run(["train.py", str(tmp_path / "run")], env, folder)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("[0, 5, 10, 15] ['fc1/output_0', 'fc2/output_0', 'relu/output_0']"), out.stdout
    import tensortap as tt

    trial = tt.create_trial(str(tmp_path / "run"))
    assert set(trial.tensor_names(collection="weights")) == {"fc1.weight", "fc2.weight"}
    assert trial.tensor("gradients/fc2.bias").value(15).shape == (4,)
    assert trial.layer_kind("relu/output_0") == "relu"


def test_the_suite_fails_an_adapter_that_keeps_views_of_live_parameters(installed, tmp_path):
    """The same plugin with a capture bug (to_numpy returning the parameter's own memory, which
    SGD then updates in place) does not pass: the suite can fail."""
    folder, env = installed
    script = ("import sys, tensortap_tinynet.adapter as a\n"
              "a.TinyAdapter.to_numpy = lambda self, t: t.data\n"
              "from tensortap.testing.conformance import check_kit\n"
              "from tensortap_tinynet.conformance import Kit\n"
              "check_kit(Kit(), sys.argv[1])\n")
    out = run(["-c", script, str(tmp_path)], env, folder)
    assert out.returncode != 0
    assert "AssertionError: fc1.weight at step 0 differs from what the forward used" in out.stderr, out.stderr
