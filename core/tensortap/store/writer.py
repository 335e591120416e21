"""The store writer: owns a worker's files, writes from a background thread.

The training thread only copies arrays and queues them; a daemon thread frames and writes.
Memory is bounded by `queue_bytes`; when the disk cannot keep up the policy decides:
"block" (default) makes the training thread wait, so nothing is lost; "drop" drops the
newest step and counts it (reported in the run as an event and by `Hook.stats`).
A write error (disk full, lost connection) drops that step, is reported once per kind,
rolls to fresh files so the damage stays at a file's tail, and writing resumes when it can.
The writer holds its worker's claim (claim.WorkerClaim) from creation to close and never
replaces a file: every segment is created new.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import numpy as np

from .._version import __version__
from ..errors import ConfigError
from . import framing, index, layout
from .claim import ClaimLost, WorkerClaim, open_new
from .fs import RunPath, is_local, join, preallocate, resolve

log = logging.getLogger("tensortap")

DEFAULT_QUEUE_BYTES = 512 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 1024 * 1024 * 1024
SMALL_RECORD = 64 * 1024  # arrays up to this size are framed in memory and written together
#: arrays up to this size share "pack" records (format 4): a reduction's 40 bytes would otherwise
#: carry 21 bytes of framing of their own ...
PACK_MAX = 2048
#: ... of at most this many payload bytes (a lookup reads, and checks, its whole pack: one page
#: keeps a random lookup of a small array within ~10 % of reading a record of its own)
PACK_BYTES = 4096
#: once woken, the writer waits this long for more steps and writes them in one burst ...
LINGER_SECONDS = 0.01
#: ... unless this many bytes are queued (or a flush waits): then it starts at once
BURST_BYTES = 4 * 1024 * 1024
_CLOSE = object()
_ROLL = object()


@dataclass
class TensorItem:
    """One array to store. `kind` is "value" or "reduction:<name>"."""

    name: str
    kind: str
    collections: Tuple[str, ...]
    array: np.ndarray[Any, Any]


@dataclass
class StepBatch:
    step: int
    mode: str
    mode_step: int
    items: List[TensorItem] = field(default_factory=list)
    time: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(i.array.nbytes for i in self.items)


@dataclass
class WriterStats:
    steps_written: int = 0
    tensors_written: int = 0
    bytes_written: int = 0
    steps_dropped: int = 0
    write_errors: int = 0
    blocked_seconds: float = 0.0


class StoreWriter:
    """Writes one worker's records under `<out_dir>/workers/worker-<rank>/`."""

    def __init__(
        self,
        out_dir: RunPath,
        rank: int = 0,
        meta: Optional[Dict[str, Any]] = None,
        *,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        on_full: str = "block",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        flush_seconds: Optional[float] = None,
        on_error: Optional[Callable[[str, BaseException], None]] = None,
        claim: Optional[WorkerClaim] = None,
    ) -> None:
        """`claim`: the worker's claim when the caller took it already (tt.Hook does, at creation);
        else it is taken here. Either way a second writer of the same worker is refused."""
        if on_full not in ("block", "drop"):
            raise ConfigError(f'on_full must be "block" or "drop", got {on_full!r}')
        self.fs, self.root = resolve(out_dir)
        self.local = is_local(self.fs)
        self.worker = layout.worker_name(rank)
        self.dir = join(self.root, layout.WORKERS_DIR, self.worker)
        self.meta = dict(meta or {})
        self.queue_bytes = int(queue_bytes)
        self.on_full = on_full
        self.segment_bytes = int(segment_bytes)
        # Remote objects become visible only when closed: roll segments on a timer there.
        self.flush_seconds = flush_seconds if flush_seconds is not None else (None if self.local else 5.0)
        self.on_error = on_error or (lambda what, exc: log.warning("tensortap: %s: %s", what, exc))
        self.stats = WriterStats()
        self._q: Deque[Any] = deque()  # StepBatch, index records (dicts), _ROLL, _CLOSE
        self._pending = 0
        self._cv = threading.Condition()
        self._busy = False
        self._idle = False  # the writer thread waits for a first item (submit wakes it)
        self._urgent = 0  # flush() calls waiting (the writer does not linger then)
        self._closed = False
        self._seg = -1
        self._data: Optional[IO[bytes]] = None
        self._index: Optional[IO[bytes]] = None
        self._data_pos = 0
        self._seg_opened = 0.0
        self._names: Dict[Tuple[str, str], int] = {}
        self._name_defs: List[List[Any]] = []
        self._dtypes: Dict[str, int] = {}
        self._dtype_ids: Dict[np.dtype[Any], int] = {}
        self._shapes: Dict[Tuple[int, ...], int] = {}
        self._dropped_unreported = 0
        self._seg_steps = 0  # items written to the open segment
        self._failed_in_a_row = 0  # steps lost to write errors since the last good write
        self._claim_reported = False  # a lost claim was reported (once)
        self._own_seg = -1  # the last segment this writer created (only its own files are ever removed)
        self._fd: Optional[int] = None  # the local data file's descriptor (preallocation)
        self._rank = int(rank)
        self._last_step: Optional[int] = None
        self._claim = claim if claim is not None else WorkerClaim.acquire(out_dir, rank)
        if (self._claim.root, self._claim.rank) != (self.root, self._rank):
            raise ConfigError(f"the claim passed is for {self._claim.worker} of {self._claim.root!r}, "
                              f"not {self.worker} of {self.root!r}")
        self._token = bytes.fromhex(self._claim.token)
        try:
            self._open_dir()
        except BaseException:
            self._claim.release(remove=True)
            raise
        self._thread = threading.Thread(target=self._run, name=f"tensortap-writer-{self.worker}", daemon=True)
        self._thread.start()
        self._claim.start_heartbeat(lambda: self._last_step)

    # ---- set-up -------------------------------------------------------------------------
    def _open_dir(self) -> None:
        """Write the run marker and this worker's meta.json (the claim made the directory and
        refused a worker that already holds a run)."""
        fs = self.fs
        marker = join(self.root, layout.RUN_MARKER)
        run_info = {"format": "tensortap-run", "format_version": layout.FORMAT_VERSION}
        meta = {
            "format_version": layout.FORMAT_VERSION,
            "tensortap_version": __version__,
            "worker": self.worker,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "created": time.time(),
            "writer": self._claim.token,
            **self.meta,
        }
        try:
            if not fs.exists(marker):
                self._put(marker, json.dumps(run_info).encode())
            self._put(join(self.dir, layout.META), json.dumps(meta, default=str, indent=1).encode())
        except PermissionError as e:
            raise ConfigError(f"out_dir {self.root!r} is not writable ({e}); pass an out_dir you can write "
                              "to") from None
        except OSError as e:
            raise ConfigError(f"cannot write to the run directory {self.root!r}: {e}") from None

    def _put(self, path: str, data: bytes) -> None:
        """Write a small whole file atomically (rename locally; one PUT on object stores)."""
        if self.local:
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def update_meta(self, **fields: Any) -> None:
        """Merge fields into the worker's meta.json (e.g. the framework, once known)."""
        self.meta.update(fields)
        path = join(self.dir, layout.META)
        try:
            cur = json.loads(self.fs.cat_file(path))
        except Exception:  # noqa: BLE001 - rewrite from what we know
            cur = {}
        cur.update(fields)
        self._put(path, json.dumps(cur, default=str, indent=1).encode())

    # ---- the training thread's side -----------------------------------------------------
    def submit(self, batch: StepBatch) -> bool:
        """Queue a step; returns False if the "drop" policy dropped it."""
        size = batch.nbytes
        with self._cv:
            if self._closed:
                return False
            if self._pending and self._pending + size > self.queue_bytes:
                if self.on_full == "drop":
                    self.stats.steps_dropped += 1
                    self._dropped_unreported += 1
                    return False
                t0 = time.perf_counter()
                while self._pending and self._pending + size > self.queue_bytes:
                    self._cv.wait(0.5)
                self.stats.blocked_seconds += time.perf_counter() - t0
            self._q.append(batch)
            self._pending += size
            if self._idle or self._pending >= BURST_BYTES:  # else the lingering writer takes it with the rest
                self._cv.notify_all()
        return True

    def submit_record(self, header: Dict[str, Any]) -> None:
        """Queue a small index record (rule result, event, end)."""
        with self._cv:
            if self._closed:
                return
            self._q.append(header)
            if self._idle:
                self._cv.notify_all()

    def flush(self, timeout: Optional[float] = None, roll: bool = True) -> bool:
        """Wait until everything queued so far is written and readable. False on timeout.
        On object stores an object becomes readable only once closed, so this also closes
        the open segment there (the next write starts a new one); `roll=False` only waits for
        the queue to be written (readable there once the segment closes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            if roll and not self.local and not self._closed and (self._q or self._busy or self._data is not None):
                self._q.append(_ROLL)
            self._urgent += 1  # no lingering while someone waits
            self._cv.notify_all()
            try:
                while self._q or self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cv.wait(0.5 if left is None else min(left, 0.5))
            finally:
                self._urgent -= 1
        return True

    def close(self, timeout: Optional[float] = None) -> None:
        """Write what is queued, mark the run complete for this worker, close the files."""
        with self._cv:
            if self._closed:
                return
        self.submit_record({"type": "end", "time": time.time()})
        self.flush(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return  # still writing past the timeout: the claim stays (the process's exit releases it)
        lost = self._claim.check()
        if lost is not None and not self._claim_reported:
            self.on_error("closing the run", ClaimLost(lost))
        self._claim.release(self._last_step)

    # ---- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        burst: Optional[List[Any]]
        while True:
            with self._cv:
                self._wait_for_work()
                burst = list(self._q)  # everything queued: written in one go, one wake-up of this thread
                self._q.clear()
                if not burst:
                    burst = [_CLOSE if self._closed else _ROLL]  # closing, or the segment timer ran out
                self._busy = True
            for item in burst:
                if item is _CLOSE or item is _ROLL:
                    self._close_segment()
                else:
                    self._write_item(item)
                if isinstance(item, StepBatch):  # its room in the queue is free now, not at the burst's end
                    with self._cv:
                        self._pending -= item.nbytes
                        self._cv.notify_all()
            item = None
            with self._cv:
                self._busy = False
                self._cv.notify_all()
            if burst[-1] is _CLOSE:
                return
            burst = None  # let the steps' arrays go now (an adapter may reuse their memory), not at the next burst

    def _wait_for_work(self) -> None:
        """(Holding the lock) wait until something is queued, the run closes or the segment timer
        runs out; then linger up to LINGER_SECONDS so that the small steps of a fast loop are
        written as one burst (the hand-off to this thread, not the writing, is what such steps
        cost), unless a flush waits or BURST_BYTES are queued."""
        while not self._q and not self._closed:
            timeout = None
            if self.flush_seconds and self._data is not None:
                timeout = self.flush_seconds - (time.monotonic() - self._seg_opened)
                if timeout <= 0:
                    break
            self._idle = True
            try:
                self._cv.wait(timeout)
            finally:
                self._idle = False
        if not self._q or self._closed:
            return
        end = time.monotonic() + LINGER_SECONDS
        while not self._closed and not self._urgent and self._pending < BURST_BYTES:
            left = end - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(left)

    def _segment_expired(self) -> bool:
        if not self.flush_seconds:
            return False
        return time.monotonic() - self._seg_opened >= self.flush_seconds

    def _write_item(self, item: Union[StepBatch, Dict[str, Any]]) -> None:
        if self._claim.lost is not None:  # another writer holds this worker now: write nothing more
            if isinstance(item, StepBatch):
                self.stats.steps_dropped += 1
            return
        try:
            if self._data is None or self._data_pos >= self.segment_bytes or self._segment_expired():
                self._roll()
            if self._dropped_unreported:
                n, self._dropped_unreported = self._dropped_unreported, 0
                self._write_index({"type": "event", "event": "steps_dropped", "count": n,
                                   "why": "queue full (on_full='drop')", "time": time.time()})
            if isinstance(item, StepBatch):
                self._write_step(item)
            else:
                self._write_index(item)
            if self._failed_in_a_row and isinstance(item, StepBatch):
                n, self._failed_in_a_row = self._failed_in_a_row, 0
                self._write_index({"type": "event", "event": "write_resumed", "lost_steps": n,
                                   "detail": f"writing resumed at step {item.step} after {n} step(s) were lost "
                                             "to write errors", "time": time.time()})
                log.warning("tensortap: writing resumed at step %s after %s step(s) were lost to write errors",
                            item.step, n)
            assert self._index is not None  # _roll opened it
            self._index.flush()
            self._seg_steps += 1  # the segment now holds something worth keeping
        except Exception as e:  # noqa: BLE001 - never let the writer die; report and go on
            self.stats.write_errors += 1
            if isinstance(e, ClaimLost):
                self._claim_reported = True
                self.on_error(f"stopped writing at step {getattr(item, 'step', '?')}", e)
                if isinstance(item, StepBatch):
                    self.stats.steps_dropped += 1
            elif isinstance(item, StepBatch):
                self.stats.steps_dropped += 1
                self._failed_in_a_row += 1
                what = f"could not save step {item.step} ({item.mode} step {item.mode_step})"
                self.on_error(what, e)
            elif item.get("type") != "event":
                # an event is usually itself the report of an error: failing to write it during
                # the same outage is not news (it is counted in stats.write_errors)
                self.on_error(f"could not write a {item.get('type')} record", e)
            self._abandon_segment()

    def _roll(self) -> None:
        self._close_segment()
        if self._seg < 0:  # before the first segment: is the claim still ours (object stores: no lock)?
            lost = self._claim.check()
            if lost is not None:
                raise ClaimLost(lost)
        self._seg += 1  # a number once used is never reused: an existing file is never replaced
        self._data = open_new(self.fs, self.local, join(self.dir, layout.data_file(self._seg)))
        try:
            self._index = open_new(self.fs, self.local, join(self.dir, layout.index_file(self._seg)))
        except BaseException:
            self._close_segment(quiet=True)
            try:
                self.fs.rm_file(join(self.dir, layout.data_file(self._seg)))  # the one we just created
            except Exception:  # noqa: BLE001
                pass
            raise
        self._own_seg = self._seg
        self._fd = self._data.fileno() if self.local else None
        self._data_pos = 0
        self._seg_opened = time.monotonic()
        self._seg_steps = 0
        # Its first record names the segment and its writer: a segment copied over another, or from
        # another run, is recognised by the reader (and the data records' checksums are bound to it).
        self._write_index({"type": "segment", "seg": self._seg, "writer": self._claim.token, "worker": self.worker})
        # Each segment repeats the whole definition table: segments stand alone.
        if self._name_defs:
            self._write_index({
                "type": "defs",
                "names": self._name_defs,
                "dtypes": [[i, d] for d, i in self._dtypes.items()],
                "shapes": [[i, list(s)] for s, i in self._shapes.items()],
            })

    def _close_segment(self, quiet: bool = False) -> None:
        # Data before index: an index entry must never point at bytes not yet visible. On an object
        # store a data object that could not be written takes its index with it (never published).
        data, idx, self._data, self._index = self._data, self._index, None, None
        lost = False
        for f, name in ((data, layout.data_file(self._seg)), (idx, layout.index_file(self._seg))):
            if f is None:
                continue
            if lost and not self.local and hasattr(f, "discard"):
                remote: Any = f  # an fsspec buffered file
                try:
                    remote.discard()
                    remote.closed = True  # discarded: nothing left to upload (not even when collected)
                except Exception:  # noqa: BLE001
                    pass
                continue
            try:
                f.close()
            except Exception as e:  # noqa: BLE001
                lost = True
                if not quiet:
                    if isinstance(e, FileExistsError):
                        e = FileExistsError(f"{self.worker}/{name} exists already and is never overwritten; the "
                                            "steps written to this segment are lost (another writer?)")
                    self.on_error("could not close a run file", e)

    def _abandon_segment(self) -> None:
        """After a write error: close what is open without further reports (the error that got
        us here was reported); the next item starts a fresh segment."""
        try:
            self._close_segment(quiet=True)
        except Exception:  # noqa: BLE001
            pass
        self._data = self._index = None
        if self._seg >= 0 and self._own_seg == self._seg and not self._seg_steps:
            # Nothing useful in it: remove it, so a long outage (disk full for hours) does not
            # leave two empty files per failed step behind, and reuse its number (segment numbers
            # stay gap-free: a reader reports a missing one). Best effort: data first, so that an
            # index never outlives its data; a number whose files could not go is skipped.
            gone = 0
            for name in (layout.data_file(self._seg), layout.index_file(self._seg)):
                try:
                    self.fs.rm_file(join(self.dir, name))
                    gone += 1
                except FileNotFoundError:
                    gone += 1
                except Exception:  # noqa: BLE001
                    break
            if gone == 2:
                self._seg -= 1

    def _write_big(self, data: IO[bytes], pos: int, arr: np.ndarray[Any, Any], bind: Callable[[int], int]) -> int:
        """Write one big array's record at file offset `pos`; returns the record's offset.

        A padding record first places the payload at a file offset matching the array's
        address modulo 64 (framing.pad_before: full-speed copies on write and on read), the
        blocks are preallocated, and a payload of PARALLEL_CRC bytes or more is checksummed on a
        helper thread while this one writes it (framing.Checksummer). `bind(offset)` is the
        checksum seed of a record at that offset (framing.binding)."""
        buf = arr.reshape(-1).view(np.uint8).data  # its bytes, as a memoryview
        n = arr.nbytes
        gap = framing.pad_before(pos, arr.ctypes.data)
        head = framing.header(framing.KIND_DATA, n)
        if gap:
            head = framing.pad(gap) + head
        if self._fd is not None:
            preallocate(self._fd, pos, gap + n + framing.OVERHEAD)
        seed = bind(pos + gap)
        if n >= framing.PARALLEL_CRC:
            summer = framing.Checksummer(seed)
            summer.add(buf)
            data.write(head)
            data.write(buf)
            payload_crc = summer.value()
        else:
            payload_crc = framing.crc(buf, seed)
            data.write(head)
            data.write(buf)
        data.write(framing.trailer(payload_crc))
        return pos + gap

    def _write_packs(self, packed: List[Tuple[int, int, int, np.ndarray[Any, Any]]], pos: int, step: int,
                     rows: List[Tuple[int, int, int, int, int]], out: List[bytes], packs: List[List[int]]) -> int:
        """Frame a step's small arrays into pack records from file offset `pos` (format 4): each
        array at a file offset aligned for its dtype, its index row pointing at its own bytes; each
        pack's checksum bound to (writer, worker, segment, step, PACK_NID, its offset). Appends the
        records to `out`, the rows to `rows`, [offset, payload length] per pack to `packs`; returns
        the offset after the last pack."""
        header, trailer, crc, binding = framing.header, framing.trailer, framing.crc, framing.binding
        token, rank, seg = self._token, self._rank, self._seg
        parts: List[bytes] = []
        start, length = pos, 0
        for nid, did, sid, arr in packed:
            n = arr.nbytes
            if parts and length + n + 16 > PACK_BYTES:
                payload = b"".join(parts)
                out += (header(framing.KIND_DATA, length), payload,
                        trailer(crc(payload, binding(token, rank, seg, step, framing.PACK_NID, start))))
                packs.append([start, length])
                start, length, parts = start + framing.OVERHEAD + length, 0, []
            at = start + framing.HEADER_SIZE + length
            gap = -at % max(arr.dtype.alignment, 1)
            if gap:
                parts.append(bytes(gap))
                at += gap
            parts.append(arr.tobytes())  # raw bytes whatever the dtype (complex, bfloat16, unicode)
            length += gap + n
            rows.append((nid, did, sid, at, n))
        payload = b"".join(parts)
        out += (header(framing.KIND_DATA, length), payload,
                trailer(crc(payload, binding(token, rank, seg, step, framing.PACK_NID, start))))
        packs.append([start, length])
        return start + framing.OVERHEAD + length

    def _write_index(self, header: Dict[str, Any], entries: Optional[np.ndarray[Any, Any]] = None) -> None:
        assert self._index is not None  # _roll opened it
        self._index.write(framing.encode(framing.KIND_INDEX, index.encode(header, entries)))

    def _write_step(self, batch: StepBatch) -> None:
        new_names, new_dtypes, new_shapes = [], [], []
        rows = []
        packed: List[Tuple[int, int, int, np.ndarray[Any, Any]]] = []  # (nid, dtype id, shape id, array)
        data = self._data
        assert data is not None  # _roll opened it
        pos = self._data_pos
        small: List[bytes] = []  # records of small arrays, joined into one write (per-call overhead dominates)
        header, crc, kind_data, overhead = framing.header, framing.crc, framing.KIND_DATA, framing.OVERHEAD
        binding, token, rank, seg, step = framing.binding, self._token, self._rank, self._seg, batch.step
        for it in batch.items:
            key = (it.name, it.kind)
            nid = self._names.get(key)
            if nid is None:
                nid = len(self._names)
                self._names[key] = nid
                d = [nid, it.name, it.kind, list(it.collections)]
                self._name_defs.append(d)
                new_names.append(d)
            arr = it.array
            did = self._dtype_ids.get(arr.dtype)
            if did is None:
                dstr = index.dtype_code(arr.dtype)
                did = self._dtypes.get(dstr)
                if did is None:
                    did = self._dtypes[dstr] = len(self._dtypes)
                    new_dtypes.append([did, dstr])
                self._dtype_ids[arr.dtype] = did
            shp = arr.shape
            sid = self._shapes.get(shp)
            if sid is None:
                sid = self._shapes[shp] = len(self._shapes)
                new_shapes.append([sid, [int(x) for x in shp]])
            if not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            n = arr.nbytes
            if n <= PACK_MAX:
                packed.append((nid, did, sid, arr))
                continue
            if n <= SMALL_RECORD:
                payload = arr.tobytes()  # raw bytes whatever the dtype (complex, bfloat16, unicode)
                seed = binding(token, rank, seg, step, nid, pos)
                small += (header(kind_data, n), payload, framing.trailer(crc(payload, seed)))
            else:  # big: no copy; crc and write straight from the array's memory
                if small:
                    data.write(b"".join(small))
                    small = []
                def bind(off: int, nid: int = nid) -> int:
                    return binding(token, rank, seg, step, nid, off)

                pos = self._write_big(data, pos, arr, bind)
            rows.append((nid, did, sid, pos, n))
            pos += n + overhead
        packs: List[List[int]] = []
        if packed:
            pos = self._write_packs(packed, pos, step, rows, small, packs)
        if small:
            data.write(b"".join(small))
        data.flush()
        self._data_pos = pos
        if new_names or new_dtypes or new_shapes:
            self._write_index({"type": "defs", "names": new_names, "dtypes": new_dtypes, "shapes": new_shapes})
        entries = np.array(sorted(rows), dtype=index.ENTRY_DTYPE) if rows else None
        head: Dict[str, Any] = {"type": "step", "step": batch.step, "mode": batch.mode, "mode_step": batch.mode_step,
                                "time": batch.time or time.time()}
        if packs:
            head["packs"] = packs
        self._write_index(head, entries)
        self._last_step = batch.step
        self.stats.steps_written += 1
        self.stats.tensors_written += len(batch.items)
        self.stats.bytes_written += sum(r[4] for r in rows)
