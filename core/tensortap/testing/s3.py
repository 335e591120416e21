"""A real S3 HTTP endpoint for tests: moto's standalone server on 127.0.0.1, configured so that
s3fs (in this process and in any subprocess started after it) talks to it, and fresh
``s3://bucket/prefix`` run URLs on it. Needs ``s3fs`` and ``moto[server]``.

>>> with MotoS3() as s3:
...     hook = tt.Hook(s3.new_url("exp1"), include_collections=["weights"])
"""
from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Optional

BACKENDS = ("local", "s3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """moto's S3 server in a subprocess, plus the AWS_* / fsspec settings that point s3fs at it."""

    def __init__(self, bucket: str = "tt-tests", log_dir: Optional[str] = None) -> None:
        self.bucket = bucket
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="tt-moto-")
        self.endpoint = ""
        self.env: Dict[str, str] = {}
        self._proc: Optional[subprocess.Popen] = None
        self._old_env: Dict[str, Optional[str]] = {}
        self._old_conf = None
        self._ids = itertools.count()

    def start(self, timeout: float = 60.0) -> "MotoS3":
        """Start the server, wait until it accepts connections, set the environment, make the bucket."""
        import fsspec

        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._log = open(os.path.join(self.log_dir, "moto.log"), "w")
        self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                      stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start (log: {self.log_dir}/moto.log)") from None
                time.sleep(0.1)
        # subprocesses (CLI, writers, Dask workers) inherit these; s3fs here reads fsspec's config
        self.env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
                    "FSSPEC_S3_ENDPOINT_URL": self.endpoint}
        self._old_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        self._old_conf = fsspec.config.conf.get("s3")
        fsspec.config.conf["s3"] = {"endpoint_url": self.endpoint}
        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(self.bucket)
        return self

    def new_url(self, name: str = "run") -> str:
        """A fresh, unused s3:// run URL whose prefix contains a readable form of `name`."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:80] or "run"
        return f"s3://{self.bucket}/{next(self._ids):04d}-{slug}/run"

    def stop(self) -> None:
        """Stop the server and restore the environment and fsspec config."""
        import fsspec

        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
            self._log.close()
        for k, v in self._old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._old_env = {}
        if self.env:
            if self._old_conf is None:
                fsspec.config.conf.pop("s3", None)
            else:
                fsspec.config.conf["s3"] = self._old_conf
            self.env = {}

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
