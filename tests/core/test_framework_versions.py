"""Supported framework versions: the comparison (against `packaging`, the reference
implementation, which the core does not use), the check made when an adapter loads, and what
`tensortap plugins` shows. The per-framework checks, with the real frameworks, are in
tests/plugins/<fw>/test_*_versions.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensortap as tt
from tensortap.framework_versions import contains

packaging_specifiers = pytest.importorskip("packaging.specifiers")

releases = st.lists(st.integers(0, 12), min_size=1, max_size=4).map(lambda p: ".".join(map(str, p)))
versions = st.tuples(releases, st.sampled_from(["", "+cpu", "+cu121.post1"])).map("".join)
clauses = st.tuples(st.sampled_from([">=", "<=", "==", "!=", ">", "<"]), releases).map("".join)
specifiers = st.lists(clauses, min_size=1, max_size=3).map(",".join)


@settings(max_examples=600, deadline=None)
@given(specifiers, versions)
def test_contains_agrees_with_packaging_on_release_and_local_versions(spec, version):
    expected = packaging_specifiers.SpecifierSet(spec).contains(version, prereleases=True)
    assert contains(spec, version) == expected, (spec, version)


def test_a_pre_release_counts_as_its_release():
    assert not contains(">=2.1,<3", "3.0.0rc1")   # packaging would call this in range
    assert contains(">=2.1,<3", "2.1.0rc1")
    assert contains(">=2.16,<3", "2.17.0.dev20250101")


@pytest.mark.parametrize("spec", ["~=2.1", ">=2.x", "2.1", ">=2.1;<3", ">=", "==2.*"])
def test_a_bad_range_is_refused_naming_it(spec):
    with pytest.raises(tt.ConfigError, match=r"SupportedVersions\('torch'\): supported: .* is not one of"):
        tt.SupportedVersions("torch", supported=spec)
    with pytest.raises(tt.ConfigError, match="`supported` is empty"):
        tt.SupportedVersions("torch", supported="")


def numpy_spec(**kw) -> tt.AdapterSpec:
    """The numpy test adapter's spec, stating numpy versions: numpy is its framework here."""
    return tt.AdapterSpec(name="numpy", model_modules=("tensortap.testing",),
                          adapter="tensortap.testing.adapter:NumpyAdapter",
                          versions=(tt.SupportedVersions("numpy", **kw),))


def test_outside_the_supported_range_load_warns_once_and_loads():
    import numpy as np

    spec = numpy_spec(supported=">=1.0,<1.1")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cls = spec.load()
        assert spec.load() is cls and cls.__name__ == "NumpyAdapter"
    msgs = [str(w.message) for w in seen if issubclass(w.category, tt.FrameworkVersionWarning)]
    assert len(msgs) == 1, msgs
    assert f"supports numpy >=1.0,<1.1, but numpy {np.__version__} is installed" in msgs[0]
    assert "pip install 'numpy>=1.0,<1.1'" in msgs[0]


def test_outside_the_required_range_load_is_an_error_naming_the_fix():
    import numpy as np

    spec = numpy_spec(supported=">=99,<100", required=">=99")
    with pytest.raises(tt.ConfigError) as e:
        spec.load()
    assert f"cannot work here: it needs numpy >=99, but numpy {np.__version__} is installed" in str(e.value)
    assert "pip install 'numpy>=99,<100'" in str(e.value)


def test_inside_the_range_load_says_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        numpy_spec(supported=">=1.0", required=">=1.0").load()


def test_an_optional_framework_the_script_did_not_import_is_not_checked():
    spec = numpy_spec(supported=">=99", required=">=99", optional=True, package="numpy")
    assert "numpy" in sys.modules  # imported: checked
    with pytest.raises(tt.ConfigError):
        spec.load()
    spec = tt.AdapterSpec(name="numpy", model_modules=("tensortap.testing",),
                          adapter="tensortap.testing.adapter:NumpyAdapter",
                          versions=(tt.SupportedVersions("tensortap_no_such_module", supported=">=1", optional=True),))
    spec.load()  # not imported (not even installed): nothing to check, nothing imported


def plugins_cli(*args: str, path_first: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path_first:
        env["PYTHONPATH"] = path_first + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "tensortap.cli", "plugins", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_tensortap_plugins_shows_each_range_and_whether_the_installed_version_is_in_it(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensortap_torch")
    import importlib.metadata as md

    installed = md.version("torch")
    r = plugins_cli()
    assert r.returncode == 0, r.stderr
    assert f"    supports: torch >=2.1,<3 (installed {installed}: supported)" in r.stdout.splitlines()

    # metadata of a torch 3.0.0 first on the path: what `tensortap plugins` reads (it imports no framework)
    fake = tmp_path / "torch-3.0.0.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 3.0.0\n")
    r = plugins_cli(path_first=str(tmp_path))
    line = "    supports: torch >=2.1,<3 (installed 3.0.0: NOT SUPPORTED, expect failures)"
    assert line in r.stdout.splitlines(), r.stdout
    r = plugins_cli("--json", path_first=str(tmp_path))
    torch_info = next(p for p in json.loads(r.stdout) if p["name"] == "torch")
    assert torch_info["frameworks"] == [{"module": "torch", "supported": ">=2.1,<3", "required": "", "optional": False,
                                         "installed": "3.0.0", "in_range": False, "usable": True}]
