"""pytest fixtures for plugin authors (auto-loaded through the pytest11 entry point)."""
from __future__ import annotations

import pytest


@pytest.fixture
def tt_run_dir(tmp_path):
    """A fresh, not-yet-existing run directory path."""
    return str(tmp_path / "run")


@pytest.fixture
def numpy_mlp():
    from .numpy_mlp import NumpyMLP

    return NumpyMLP()


@pytest.fixture
def conformance_data():
    from .conformance import batches

    return batches()
