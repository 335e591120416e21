"""Shared test helpers. Framework tests skip cleanly (with the reason) where the framework is absent."""
from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Live-rule tests check the result of every saved step: no CPU budget for the rules process unless a
# test asks for one (below 4 CPUs the default is an automatic budget that may skip steps of a long
# run; tests/core/test_rules_live_cost.py checks it with the variable unset).
os.environ.setdefault("TENSORTAP_RULES_CPU", "0")

# mxnet 1.9.1 segfaults or hangs when it is imported after tensorflow in one process (found
# by the TF plugin's tests); importing it first, where it is installed, makes any test order safe.
if importlib.util.find_spec("mxnet") is not None:
    import mxnet  # noqa: F401,E402


def require(*modules: str):
    """Skip the calling test module unless every module imports (e.g. require("torch"))."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed in this venv)", allow_module_level=True)


@pytest.fixture
def run_dir(tmp_path):
    return str(tmp_path / "run")


@pytest.fixture
def run_url(tt_run_url):
    """A fresh run location, parametrised: a local directory, then s3://… on a moto server
    (one per session, see tensortap.testing.s3): the test runs its checks on both back ends."""
    return tt_run_url
