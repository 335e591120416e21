"""One writer per (run, worker): the claim file `workers/worker-<rank>/writer.json`.

The writer takes the claim when the Hook is created and keeps it until close. The file says
who holds it (liveness.Holder) and carries a heartbeat the writer refreshes every
HEARTBEAT_SECONDS; a reader uses it to tell a live writer from a dead one (liveness.judge).

Locally the claim is an exclusive `flock` on that file, held for the writer's lifetime: the
kernel releases it when the process dies, so a second writer is refused exactly while the first
lives. On object stores (no locks) the claim object is created with a conditional PUT
(If-None-Match, where the store has it: AWS S3, MinIO, moto), read back before the first
segment is written and at close; segment objects are created the same way, so no object is
ever overwritten.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
import weakref
from dataclasses import replace
from typing import IO, Callable, Optional

from ..errors import ConfigError
from . import layout
from .fs import FileSystem, RunPath, is_local, join, make_run_dir, resolve
from .liveness import DEAD, MAX_CLAIM_BYTES, Holder, judge, when

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; identity checks only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("tensortap")

#: how often a writer refreshes its heartbeat
HEARTBEAT_SECONDS = 10.0
_PAD = 1024  # the claim is rewritten in place, padded to a fixed size: a reader never sees it shrink


# ---- the writer's side ------------------------------------------------------------------------
_live: "weakref.WeakSet[WorkerClaim]" = weakref.WeakSet()


def _forget_in_child() -> None:
    """A forked child does not own its parent's claims: drop its copies of their descriptors
    (the parent's lock stays: flock belongs to the open file, which the parent keeps)."""
    for c in list(_live):
        c._disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class ClaimLost(Exception):
    """Another writer holds the claim this writer had: it must stop writing."""


class WorkerClaim:
    """The exclusive right to write `workers/worker-<rank>/` of one run (see the module doc)."""

    def __init__(self, out_dir: RunPath, rank: int) -> None:
        self.fs, self.root = resolve(out_dir)
        self.local = is_local(self.fs)
        self.rank = int(rank)
        self.worker = layout.worker_name(rank)
        self.dir = join(self.root, layout.WORKERS_DIR, self.worker)
        self.path = join(self.dir, layout.CLAIM)
        self.token = os.urandom(16).hex()
        self.holder = Holder.this_process(self.token)
        self.lost: Optional[str] = None  # why the claim is no longer ours, once it is not
        self._fd: Optional[int] = None
        self._size = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat_thread: Optional[threading.Thread] = None
        self._released = False

    # ---- taking it ----------------------------------------------------------------------------
    @classmethod
    def acquire(cls, out_dir: RunPath, rank: int) -> "WorkerClaim":
        """Claim (out_dir, rank), or raise ConfigError naming the writer that holds it."""
        c = cls(out_dir, rank)
        make_run_dir(c.fs, c.root, join(layout.WORKERS_DIR, c.worker))
        if c.local:
            c._acquire_local()
        else:
            c._acquire_remote()
        _live.add(c)
        return c

    def _acquire_local(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        flags |= os.O_NONBLOCK
        for _ in range(20):
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as e:
                raise ConfigError(f"cannot open {self.path} to claim {self.worker} of the run ({e}); "
                                  "pass an out_dir you can write to") from None
            st = os.fstat(fd)
            if not _is_regular(st.st_mode):
                os.close(fd)
                raise ConfigError(f"{self.path} is not a regular file; this is not a run tensortap can write "
                                  "to: pass a new out_dir")
            locked = _try_flock(fd)
            if locked is False:
                raw = _pread(fd)
                os.close(fd)
                raise ConfigError(self._held_message(Holder.from_bytes(raw), locked=True))
            try:  # the file locked must still be the one at the path (a writer moving away removes its claim)
                now = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                continue
            self._fd = fd
            break
        else:  # pragma: no cover - a claim file replaced 20 times in a row
            raise ConfigError(f"could not claim {self.worker} of {self.root!r}: its claim file keeps changing")
        try:
            self._take_over(Holder.from_bytes(_pread(self._fd)), locks_work=locked is True)
            self._write(self.holder)
        except BaseException:
            self._close_fd()
            raise

    def _acquire_remote(self) -> None:
        try:
            raw = self.fs.cat_file(self.path, start=0, end=MAX_CLAIM_BYTES + 1)
        except FileNotFoundError:
            raw = None
        if raw is not None:
            self._take_over(Holder.from_bytes(raw), locks_work=False)
        data = self.holder.to_bytes()
        try:
            if raw is None:
                _create(self.fs, self.path, data)
            else:
                self.fs.pipe_file(self.path, data)  # replacing a closed or dead writer's claim
        except FileExistsError:  # another writer created it between our look and our PUT
            raise ConfigError(self._held_message(self._remote_holder(), locked=True)) from None

    def _take_over(self, old: Optional[Holder], locks_work: bool) -> None:
        """Decide about the previous holder (if any) and refuse when its run must be kept."""
        if old is not None and old.closed is None:
            state, why = judge(old)
            mine = old.on_this_machine()
            # Taken over: a writer of this machine that is gone, or that no longer holds the lock we
            # now hold. Refused: one that looks alive, or one on another machine, stale or not (only
            # the user can know it is gone; a lock we got proves nothing about another machine).
            if not ((mine and state == DEAD) or (mine and locks_work)):
                raise ConfigError(self._held_message(old, locked=False, why=why))
        if self._has_run_files():
            prev = ""
            if old is not None:
                prev = (f" (its writer, {old.describe()}, closed it)" if old.closed is not None else
                        f" (its writer, {old.describe()}, stopped without closing it)")
            raise ConfigError(f"out_dir {self.root!r} already holds a run for {self.worker}{prev}; "
                              "use a new out_dir for each run (or delete the old one)")
        if old is not None and old.closed is None:
            log.warning("tensortap: %s of %s was claimed by a writer that no longer holds it (%s; %s) and wrote "
                        "nothing; taking it over", self.worker, self.root, old.describe(), judge(old)[1])

    def _has_run_files(self) -> bool:
        try:
            names = os.listdir(self.dir) if self.local else [p.rsplit("/", 1)[-1] for p in
                                                             self.fs.ls(self.dir, detail=False)]
        except FileNotFoundError:
            return False
        return any(layout.INDEX_RE.match(n) or layout.DATA_RE.match(n) for n in names)

    def _held_message(self, h: Optional[Holder], locked: bool, why: str = "") -> str:
        where = f"{self.worker} of out_dir {self.root!r}"
        if h is None:
            who = "another writer"
        elif h.pid == os.getpid() and h.on_this_machine():
            return (f"{where} is already being written by another tt.Hook in this process (pid {h.pid}, "
                    f"since {when(h.started)}); close that hook first (hook.close()), or use a new out_dir")
        else:
            who = f"another writer ({h.describe()})"
        fix = "Use a new out_dir for this run (or pass another rank=)."
        if not locked:
            rm = f"rm {self.path}" if self.local else \
                f"python -c \"import fsspec; fsspec.open('{self.fs.unstrip_protocol(self.path)}').fs.rm_file(" \
                f"'{self.path}')\""
            fix += f" If you are sure that writer is gone ({why}), remove its claim and retry: {rm}"
        return f"{where} is claimed by {who}; two writers would overwrite each other's run. {fix}"

    # ---- keeping it ---------------------------------------------------------------------------
    def _write(self, holder: Holder) -> None:
        data = holder.to_bytes()
        if self.local:
            if self._fd is None:
                return
            data = data.ljust(max(_PAD, self._size))
            os.pwrite(self._fd, data, 0)
            if len(data) != self._size:
                os.ftruncate(self._fd, len(data))
                self._size = len(data)
        else:
            self.fs.pipe_file(self.path, data)

    def _remote_holder(self) -> Optional[Holder]:
        try:
            return Holder.from_bytes(self.fs.cat_file(self.path, start=0, end=MAX_CLAIM_BYTES + 1))
        except FileNotFoundError:
            return None

    def check(self) -> Optional[str]:
        """None while the claim is still this writer's; else why not (and it stays lost)."""
        if self.lost is not None or self._released:
            return self.lost
        try:
            if self.local:
                if self._fd is None:
                    return None
                st, now = os.fstat(self._fd), os.stat(self.path)
                cur = None if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino) else self.holder
                if cur is None:
                    cur = Holder.from_bytes(_read_file(self.path))
            else:
                cur = self._remote_holder()
        except FileNotFoundError:
            cur = None
        except OSError:
            return None  # cannot look now (a network error): not evidence of another writer
        if cur is None or cur.token != self.token:
            who = "its claim file was removed" if cur is None else f"another writer took it: {cur.describe()}"
            self.lost = (f"{self.worker} of {self.root!r} is no longer this writer's ({who}); this writer stops "
                         "writing so that it cannot overwrite or mix with the other run")
        return self.lost

    def beat(self, last_step: Optional[int] = None) -> None:
        """Refresh the heartbeat (and the last step written)."""
        with self._lock:
            if self._released or self.lost is not None:
                return
            if not self.local and self.check() is not None:
                return
            self.holder = replace(self.holder, heartbeat=time.time(), last_step=last_step)
            self._write(self.holder)

    def start_heartbeat(self, last_step: Callable[[], Optional[int]]) -> None:
        """Beat every HEARTBEAT_SECONDS on a daemon thread until release()."""
        def run() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    self.beat(last_step())
                except Exception as e:  # noqa: BLE001 - a missed beat is not worth stopping training for
                    log.debug("tensortap: heartbeat of %s failed: %s", self.path, e)

        self._beat_thread = threading.Thread(target=run, name=f"tensortap-heartbeat-{self.worker}", daemon=True)
        self._beat_thread.start()

    def release(self, last_step: Optional[int] = None, remove: bool = False) -> None:
        """Mark the claim closed (or remove it: the Hook moved to another rank) and let it go."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._stop.set()
            try:
                if self.lost is None and (self.local or self.check() is None):
                    if remove:
                        self.fs.rm_file(self.path)
                        if self.local:
                            try:
                                os.rmdir(self.dir)  # nothing else was written there
                            except OSError:
                                pass
                    else:
                        now = time.time()
                        self.holder = replace(self.holder, heartbeat=now, last_step=last_step, closed=now)
                        self._write(self.holder)
            except Exception as e:  # noqa: BLE001 - the data is written; a stale claim only delays a reader
                log.warning("tensortap: could not mark %s closed: %s", self.path, e)
            finally:
                self._close_fd()
                _live.discard(self)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file releases its flock

    def _disown(self) -> None:
        self._released = True
        self._stop.set()
        self._close_fd()

    def __del__(self) -> None:
        try:
            self._close_fd()
        except Exception:  # noqa: BLE001
            pass


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _try_flock(fd: int) -> Optional[bool]:
    """True: locked; False: another holds it; None: this file system has no working flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, EINVAL: no locks here; the holder's identity decides


def _pread(fd: int) -> bytes:
    return os.pread(fd, MAX_CLAIM_BYTES + 1, 0)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(MAX_CLAIM_BYTES + 1)


def _create(fs: FileSystem, path: str, data: bytes) -> None:
    """Create `path` holding `data`, failing with FileExistsError if it exists: atomic where the
    store has conditional writes (s3fs sends If-None-Match), a look-then-write elsewhere."""
    try:
        fs.pipe_file(path, data, mode="create")
    except TypeError:  # an fsspec implementation without the mode argument
        if fs.exists(path):
            raise FileExistsError(path) from None
        fs.pipe_file(path, data)


def open_new(fs: FileSystem, local: bool, path: str) -> IO[bytes]:
    """A new file at `path` for writing, never replacing one that exists (FileExistsError)."""
    f: IO[bytes]
    if local:
        f = fs.open(path, "xb")
        return f
    try:
        f = fs.open(path, "xb")  # s3fs: If-None-Match on the upload
    except (ValueError, NotImplementedError, TypeError):
        if fs.exists(path):
            raise FileExistsError(path) from None
        f = fs.open(path, "wb")
    return f


__all__ = ["WorkerClaim", "ClaimLost", "HEARTBEAT_SECONDS", "open_new"]
