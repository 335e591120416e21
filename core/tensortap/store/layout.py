"""Where things live inside a run directory. Only these names are ever created."""
from __future__ import annotations

import re

RUN_MARKER = "tensortap-run.json"
# 1: first release. 2: a tensor's reductions packed in one record (kind "reductions:a,b,..."),
# padding records (kind 3) before big data records. 3: each index segment opens with a "segment"
# record naming its number and writer; each data record's checksum is bound to the (writer, worker,
# segment, step, name id, offset) it was written for; workers/worker-N/writer.json claims the worker
# and carries the writer's heartbeat. 4: a step's small arrays (<= 2 KiB) share "pack" data records
# listed in the step's index record (framing: PACK_NID); an index entry points at its array's bytes
# inside its pack. Readers read every format up to theirs.
FORMAT_VERSION = 4
WORKERS_DIR = "workers"
META = "meta.json"
CLAIM = "writer.json"
DATA_RE = re.compile(r"^data-(\d{6})\.ttd$")
INDEX_RE = re.compile(r"^index-(\d{6})\.tti$")
WORKER_RE = re.compile(r"^worker-(\d{1,6})$")


def worker_name(rank: int) -> str:
    return f"worker-{int(rank)}"


def data_file(seg: int) -> str:
    return f"data-{seg:06d}.ttd"


def index_file(seg: int) -> str:
    return f"index-{seg:06d}.tti"
