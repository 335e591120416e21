"""Where things live inside a run directory. Only these names are ever created."""
from __future__ import annotations

import re

RUN_MARKER = "tensortap-run.json"
FORMAT_VERSION = 1
WORKERS_DIR = "workers"
META = "meta.json"
DATA_RE = re.compile(r"^data-(\d{6})\.ttd$")
INDEX_RE = re.compile(r"^index-(\d{6})\.tti$")
WORKER_RE = re.compile(r"^worker-(\d{1,6})$")


def worker_name(rank: int) -> str:
    return f"worker-{int(rank)}"


def data_file(seg: int) -> str:
    return f"data-{seg:06d}.ttd"


def index_file(seg: int) -> str:
    return f"index-{seg:06d}.tti"
