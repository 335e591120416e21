"""Who writes a worker of a run, and is that writer alive? The identity a claim file
(`workers/worker-<rank>/writer.json`) records (pid, host, boot, process start, heartbeat) and how
a reader judges it: on this machine by its process, elsewhere by the age of its heartbeat."""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Tuple, TypeVar

from .._version import __version__
from . import layout, safe_io
from .fs import FileSystem, join

T = TypeVar("T")

#: a writer on another machine whose heartbeat is older than this is taken for dead
DEAD_AFTER_SECONDS = 60.0
MAX_CLAIM_BYTES = 64 * 1024

ALIVE, DEAD, UNKNOWN, CLOSED = "alive", "dead", "unknown", "closed"


# ---- who this process is --------------------------------------------------------------------
def _read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _boot_id() -> Optional[str]:
    return _read_text("/proc/sys/kernel/random/boot_id")


def _pid_ns() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> Optional[int]:
    """When process `pid` started, in clock ticks since boot (Linux), or None. With the pid it
    names one process: a pid reused by a later process has a later start."""
    text = _read_text(f"/proc/{int(pid)}/stat")
    if not text or ")" not in text:
        return None
    try:
        return int(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _boot_time() -> Optional[float]:
    text = _read_text("/proc/stat") or ""
    for line in text.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def pid_exists(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except (OverflowError, ValueError, OSError):
        return False
    return True


# ---- the claim's content ----------------------------------------------------------------------
@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a worker's claim, as its writer.json says."""

    token: str
    pid: int
    host: str
    started: float
    heartbeat: Optional[float] = None
    boot_id: Optional[str] = None
    pid_ns: Optional[str] = None
    proc_start: Optional[int] = None
    last_step: Optional[int] = None
    closed: Optional[float] = None
    tensortap_version: str = ""

    @classmethod
    def this_process(cls, token: str) -> "Holder":
        now = time.time()
        return cls(token=token, pid=os.getpid(), host=socket.gethostname(), started=now, heartbeat=now,
                   boot_id=_boot_id(), pid_ns=_pid_ns(), proc_start=process_start(os.getpid()),
                   tensortap_version=__version__)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Optional["Holder"]:
        """The holder a claim file names, or None when it names none (empty, damaged, foreign)."""
        try:
            d = safe_io.loads(raw, "writer.json")
        except ValueError:
            return None
        if not isinstance(d, dict):
            return None
        try:
            h = cls(token=str(d["token"]), pid=int(d["pid"]), host=str(d["host"]), started=float(d["started"]),
                    heartbeat=_opt(float, d.get("heartbeat")), boot_id=_opt(str, d.get("boot_id")),
                    pid_ns=_opt(str, d.get("pid_ns")), proc_start=_opt(int, d.get("proc_start")),
                    last_step=_opt(int, d.get("last_step")), closed=_opt(float, d.get("closed")),
                    tensortap_version=str(d.get("tensortap_version", "")))
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        return h

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    def describe(self) -> str:
        """'pid 1234 on host "gpu7", started 2026-05-01 10:02:03' (and its last heartbeat)."""
        out = f"pid {self.pid} on host {self.host!r}, started {when(self.started)}"
        if self.heartbeat is not None:
            out += f", last heartbeat {when(self.heartbeat)}"
        return out

    def on_this_machine(self) -> bool:
        """Was it written by a process on this machine, in this pid namespace (pids comparable)?"""
        if self.host != socket.gethostname():
            return False
        ns = _pid_ns()
        return not (self.pid_ns and ns and self.pid_ns != ns)


def _opt(cast: Callable[[Any], T], v: Any) -> Optional[T]:
    return None if v is None else cast(v)


def when(t: float) -> str:
    """A time.time() as local 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def judge(holder: Holder, dead_after: float = DEAD_AFTER_SECONDS, now: Optional[float] = None) -> Tuple[str, str]:
    """(state, why): CLOSED, ALIVE, DEAD or UNKNOWN for the writer `holder` names.

    On this machine: alive while its pid runs (and is the same process: same boot, same start).
    Elsewhere: alive while its heartbeat is at most `dead_after` seconds old."""
    if holder.closed is not None:
        return CLOSED, f"closed at {when(holder.closed)}"
    if holder.on_this_machine():
        boot = _boot_id()
        if holder.boot_id and boot and holder.boot_id != boot:
            return DEAD, f"pid {holder.pid} ran before this machine rebooted"
        if not pid_exists(holder.pid):
            return DEAD, f"pid {holder.pid} on this machine is gone"
        start = process_start(holder.pid)
        if holder.proc_start is not None and start is not None and start != holder.proc_start:
            return DEAD, f"pid {holder.pid} on this machine is gone (the pid now names another process)"
        if holder.proc_start is None and start is not None and holder.started:
            bt = _boot_time()  # no recorded start (a run from an older tensortap): compare wall clocks
            if bt is not None and bt + start / os.sysconf("SC_CLK_TCK") > holder.started + 2.0:
                return DEAD, f"pid {holder.pid} on this machine is gone (the pid now names a newer process)"
        return ALIVE, f"pid {holder.pid} is running on this machine"
    if holder.heartbeat is None:
        return UNKNOWN, f"written on host {holder.host!r} without a heartbeat; cannot tell from here"
    age = (time.time() if now is None else now) - holder.heartbeat
    if age > dead_after:
        return DEAD, f"no heartbeat from host {holder.host!r} for {age:.0f} s (limit {dead_after:.0f} s)"
    return ALIVE, f"heartbeat from host {holder.host!r} {max(age, 0):.0f} s ago"


def read_holder(fs: FileSystem, local: bool, root_real: str, worker_dir: str) -> Optional[Holder]:
    """The holder named by a worker's claim file, or None (no claim: a run from before format 3).
    A claim caught while being rewritten is read again."""
    path = join(worker_dir, layout.CLAIM)
    for _ in range(3):
        try:
            raw = safe_io.read_small(fs, local, root_real, path, MAX_CLAIM_BYTES)
        except FileNotFoundError:
            return None
        h = Holder.from_bytes(raw)
        if h is not None or not raw.strip():
            return h
        time.sleep(0.01)
    return None
