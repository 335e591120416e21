"""pytest fixtures for plugin authors (auto-loaded through the pytest11 entry point). Every test
session also gets the numpy test adapter (framework "numpy", tensortap.testing.NumpyMLP), which is
no built-in: registered here, for the session's process and the processes its tests start."""
from __future__ import annotations

import re

import pytest


def pytest_configure(config: pytest.Config) -> None:
    from .plugin import use_numpy_adapter

    use_numpy_adapter()


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


@pytest.fixture(scope="session")
def tt_s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1, started once per session; s3fs (and subprocesses) use it."""
    pytest.importorskip("s3fs", reason="s3:// runs need s3fs")
    pytest.importorskip("moto.server", reason="a local S3 endpoint needs moto[server]")
    from .s3 import MotoS3

    server = MotoS3(log_dir=str(tmp_path_factory.mktemp("moto")))
    try:
        server.start()
    except RuntimeError as e:
        pytest.skip(str(e))
    yield server
    server.stop()


def tt_new_run_url(request, backend: str, name: str = "run") -> str:
    """A fresh run location on `backend` ("local": a new temp dir; "s3": a new prefix on tt_s3)."""
    if backend == "s3":
        return request.getfixturevalue("tt_s3").new_url(name)
    if backend != "local":
        raise ValueError(f"unknown backend {backend!r}; use 'local' or 's3'")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:40] or "run"
    return str(request.getfixturevalue("tmp_path_factory").mktemp(slug) / "run")


@pytest.fixture(params=["local", "s3"])
def tt_run_url(request):
    """A fresh run location, once as a local directory and once as s3://… on the session's moto
    server: a test taking it runs the same checks on both back ends."""
    return tt_new_run_url(request, request.param, request.node.name)
