"""Shared test helpers. Framework tests skip cleanly (with the reason) where the framework is absent."""
from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def require(*modules: str):
    """Skip the calling test module unless every module imports (e.g. require("torch"))."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed in this venv)", allow_module_level=True)


@pytest.fixture
def run_dir(tmp_path):
    return str(tmp_path / "run")
