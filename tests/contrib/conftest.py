"""Fixtures for the contrib packages' tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """One torch thread: several times faster than two on a busy 2-core machine."""
    torch = pytest.importorskip("torch", reason="needs torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
