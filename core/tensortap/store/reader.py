"""Reading one worker's records: tail the index segments, fetch one tensor's bytes on demand.

Opening a run reads only index files. A value lookup reads exactly one data record
(header + payload + checksum) at the offset the index gives, verifies its checksum, and
returns the array. Nothing in a run can run code: JSON and raw bytes of whitelisted dtypes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import CorruptRunError, NotARunError
from . import framing, index, layout
from .fs import is_local, join

log = logging.getLogger("tensortap")
MAX_NDIM = 64
_ALIGN = 64
_PAGE = 4096
_CHUNK = 1 << 20
_GAP = 256 * 1024  # read_many: records closer than this share one request (the bytes between are read too)
_SPAN = 64 << 20  # ... up to this many bytes per request


class _BufferPool:
    """Byte buffers for read_many, reused once nothing refers to them any more (every array
    read into one is a view of it, and holds it): a live reader reading step after step
    then touches memory that is already mapped, instead of fresh pages the kernel must fault
    in and zero (measured ~2x slower for a 2 MB step)."""

    def __init__(self, max_buffers: int = 8, max_bytes: int = 64 << 20) -> None:
        self.max_buffers, self.max_bytes = max_buffers, max_bytes
        self._bufs: List[Tuple[np.ndarray, int]] = []  # (buffer, its address)

    def get(self, n: int) -> Tuple[np.ndarray, int]:
        """A buffer of at least `n` bytes and its address."""
        bufs = self._bufs
        for b, addr in bufs:
            # referred to by the list's tuple, this loop's name and getrefcount's argument only: free
            if n <= b.size <= 2 * n and sys.getrefcount(b) <= 3:
                return b, addr
        b = np.empty(n, np.uint8)
        got = (b, _address(b))
        if n <= self.max_bytes // self.max_buffers:
            if len(bufs) >= self.max_buffers:
                free = [i for i, (x, _) in enumerate(bufs) if sys.getrefcount(x) <= 3]
                if not free:
                    return got
                del bufs[free[0]]
            bufs.append(got)
        return got


def _address(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


def _end(entry: tuple) -> int:
    """File offset after the record of a (seg, offset, nbytes, ...) entry."""
    return entry[1] + entry[2] + framing.OVERHEAD


def _is_id(x) -> bool:
    """A non-negative JSON integer (not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _list(header: dict, key: str) -> list:
    v = header.get(key, [])
    if not isinstance(v, list):
        raise index.BadIndex(f"{key!r} is not a list")
    return v


@dataclass
class StepIndex:
    step: int
    mode: str
    mode_step: int
    seg: int
    entries: np.ndarray  # index.ENTRY_DTYPE rows, sorted by nid
    time: float
    #: per-row segment, only for a step written in parts that landed in different segments
    segs: Optional[np.ndarray] = None

    _pos: Optional[Dict[int, int]] = None  # nid -> row, made once the step is looked up often
    _rows: Optional[List[tuple]] = None  # the rows as Python tuples, made with _pos
    _lookups: int = 0

    def _index_of(self, nid: int) -> int:
        pos = self._pos
        if pos is not None:
            return pos.get(nid, -1)
        self._lookups += 1
        if self._lookups > _BUILD_AFTER:  # a step read tensor after tensor (a rule): tables pay off
            pos = self._pos = {n: i for i, n in enumerate(self.entries["nid"].tolist())}
            _HOT.add(self)
            return pos.get(nid, -1)
        nids = self.entries["nid"]  # sorted: a binary search, nothing kept (a scan across steps)
        i = int(np.searchsorted(nids, nid))
        return i if i < len(nids) and int(nids[i]) == nid else -1

    def has(self, nid: int) -> bool:
        """Is name id `nid` stored at this step?"""
        return self._index_of(nid) >= 0

    def find(self, nid: int) -> Optional[np.void]:
        """The index row of name id `nid` at this step, or None."""
        i = self._index_of(nid)
        return self.entries[i] if i >= 0 else None

    def find_row(self, nid: int) -> Optional[tuple]:
        """Like find, as a plain tuple (nid, dtype id, shape id, offset, nbytes): cheaper to use."""
        i = self._index_of(nid)
        if i < 0:
            return None
        rows = self._rows
        if rows is None:
            if self._pos is None:
                return self.entries[i].item()
            rows = self._rows = self.entries.tolist()
        return rows[i]

    def drop_tables(self) -> None:
        """Forget the lookup tables (rebuilt if the step gets busy again)."""
        self._pos = self._rows = None
        self._lookups = 0


#: lookups on one step before its nid -> row tables are built
_BUILD_AFTER = 16


class _HotSteps:
    """The steps whose lookup tables are kept, least recently built dropped first: a reader
    scanning a whole run (a scalar over 10,000 steps of 1,000 tensors) keeps memory flat,
    while a step read tensor after tensor (rules) looks up through a dict."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._steps: "OrderedDict[int, weakref.ref]" = OrderedDict()
        self._lock = threading.Lock()

    def add(self, si: StepIndex) -> None:
        with self._lock:
            self._steps[id(si)] = weakref.ref(si)
            self._steps.move_to_end(id(si))
            while len(self._steps) > self.size:
                old = self._steps.popitem(last=False)[1]()
                if old is not None:
                    old.drop_tables()


_HOT = _HotSteps()


class DirWatch:
    """Lists a local directory again only when its modification time changed: cheap enough to
    ask before every refresh of a live run. An mtime that is still recent when listed is not
    trusted (a file created within the same clock tick leaves it unchanged): listed again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime: Optional[int] = None
        self._names: List[str] = []

    def names(self) -> List[str]:
        """The directory's entries (FileNotFoundError if it does not exist)."""
        st = os.stat(self.path)
        if st.st_mtime_ns != self._mtime:
            self._names = os.listdir(self.path)
            # trust the mtime only once it is a second old
            self._mtime = st.st_mtime_ns if time.time_ns() - st.st_mtime_ns > 1_000_000_000 else None
        return self._names


class WorkerReader:
    """The index of one worker, kept up to date by `refresh()`."""

    def __init__(self, fs, root: str, worker: str) -> None:
        self.fs = fs
        self.local = is_local(fs)
        self.root = root
        self.worker = worker
        self.dir = join(root, layout.WORKERS_DIR, worker)
        self.meta: dict = {}
        self.names: Dict[int, Tuple[str, str, Tuple[str, ...]]] = {}
        self.nid_of: Dict[Tuple[str, str], int] = {}
        self.dtypes: Dict[int, np.dtype] = {}
        self.shapes: Dict[int, Tuple[int, ...]] = {}
        self.steps: Dict[int, StepIndex] = {}
        self.mode_steps: Dict[Tuple[str, int], int] = {}
        self.records: List[dict] = []  # rule results, events
        self.ended = False
        #: bumped by every index record applied (`names_version`: by every name definition);
        #: Trial keeps what it derived from the index until they change
        self.version = 0
        self.names_version = 0
        self.problems: List[str] = []
        self._offsets: Dict[int, int] = {}
        self._sizes: Dict[int, int] = {}
        self._handles: Dict[int, object] = {}
        self._tails_noted: set = set()
        self._done: set = set()  # local index segments read to their end (a later one exists)
        self._pool = _BufferPool()
        self._index_fh: Dict[int, object] = {}  # local: the open index segment last read
        self._lock = threading.RLock()
        self._watch = DirWatch(self.dir) if self.local else None
        self._load_meta()

    def _load_meta(self) -> None:
        path = join(self.dir, layout.META)
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            self.meta = {}
            return
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self.problems.append(f"{self.worker}/meta.json is unreadable ({e}); ignored")
            meta = {}
        fv = meta.get("format_version", layout.FORMAT_VERSION)
        if isinstance(fv, int) and fv > layout.FORMAT_VERSION:
            from .._version import __version__

            raise NotARunError(
                f"{self.dir} was written by tensortap {meta.get('tensortap_version', '?')} in store format "
                f"{fv}; this tensortap ({__version__}) reads formats up to {layout.FORMAT_VERSION}. "
                "Upgrade tensortap to read it."
            )
        self.meta = meta

    # ---- index ---------------------------------------------------------------------------
    def _segments(self) -> Dict[int, Optional[int]]:
        """Index segment -> its size in bytes (None locally, where files grow in place)."""
        try:
            if self.local:
                entries = self._watch.names()
            else:
                self.fs.invalidate_cache(self.dir)
                entries = self.fs.ls(self.dir, detail=True)
        except FileNotFoundError:
            return {}
        segs: Dict[int, Optional[int]] = {}
        for e in entries:
            p = e if self.local else e["name"]
            base = p.rstrip("/").rsplit("/", 1)[-1]
            m = layout.INDEX_RE.match(base)
            if m:
                segs[int(m.group(1))] = None if self.local else int(e.get("size") or 0)
            elif not self.local:
                d = layout.DATA_RE.match(base)
                if d:  # objects are immutable once visible: their size is final, no HEAD per lookup
                    self._sizes[int(d.group(1))] = int(e.get("size") or 0)
        return dict(sorted(segs.items()))

    def _read_from(self, seg: int, path: str, start: int, size: Optional[int]) -> bytes:
        if self.local:  # the segment being written stays open: a live reader reads it again and again
            f = self._index_fh.get(seg)
            if f is None:
                for old in self._index_fh.values():
                    old.close()
                self._index_fh.clear()
                f = self._index_fh[seg] = open(path, "rb")
            f.seek(start)
            return f.read()
        if size is not None and start >= size:
            return b""  # nothing new (and a ranged GET past the end is an error on S3)
        return self.fs.cat_file(path, start=start, end=size)

    def refresh(self) -> int:
        """Read index records appended since the last call; returns how many steps are new."""
        with self._lock:
            new = 0
            sizes = self._segments()
            segs = list(sizes)
            for seg in segs:
                if seg in self._done:
                    continue
                start = self._offsets.get(seg, 0)
                try:
                    buf = self._read_from(seg, join(self.dir, layout.index_file(seg)), start, sizes[seg])
                except FileNotFoundError:
                    continue
                end = 0
                for item in framing.iter_records_verbose(buf, copy=False):  # buf is immutable bytes
                    end = item.next_offset
                    if isinstance(item, framing.BadPayload):
                        self.problems.append(
                            f"{self.worker} {layout.index_file(seg)}: record at byte {start + item.offset} "
                            "failed its checksum and was skipped"
                        )
                        continue
                    if item.kind != framing.KIND_INDEX:
                        self.problems.append(f"{self.worker} {layout.index_file(seg)}: unexpected record kind")
                        continue
                    try:
                        new += self._apply(seg, *index.decode(item.payload))
                    except (index.BadIndex, TypeError, ValueError, KeyError, OverflowError) as e:
                        # checksum-valid but malformed (a forged or foreign file): data, never code
                        self.problems.append(f"{self.worker} {layout.index_file(seg)}: bad index record at byte "
                                             f"{start + item.offset} ({type(e).__name__}: {e}); skipped")
                self._offsets[seg] = start + end
                foreign = start + end == 0 and len(buf) >= 4 and bytes(buf[:4]) != framing.MAGIC
                self._note_unreadable_tail(seg, start + end, start + len(buf), segs, foreign)
                if self.local and seg != segs[-1]:
                    # the writer closes a segment before it creates the next one: read to its end now
                    self._done.add(seg)
            return new

    def _note_unreadable_tail(self, seg: int, good_end: int, size: int, segs: List[int], foreign: bool) -> None:
        """Bytes after the last readable record are normal at the tail of the segment being
        written; anywhere else (an older segment, a closed run, a file that does not even start
        like a record) they are damage: say so once."""
        if good_end >= size or (seg == segs[-1] and not self.ended and not foreign):
            return
        key = (seg, good_end)
        if key in self._tails_noted:
            return
        self._tails_noted.add(key)
        self.problems.append(
            f"{self.worker} {layout.index_file(seg)}: {size - good_end} byte(s) from byte {good_end} are not a "
            "valid record (a torn write or a damaged/foreign file); ignored"
        )

    def _apply(self, seg: int, header: dict, entries: Optional[np.ndarray]) -> int:
        kind = header["type"]
        self.version += 1
        if kind == "defs":
            # validate the whole record before applying any of it
            names, dtypes, shapes = [], [], []
            for d in _list(header, "names"):
                if not (isinstance(d, list) and len(d) == 4):
                    raise index.BadIndex("malformed name definition")
                nid, name, nkind, colls = d
                if not (_is_id(nid) and isinstance(name, str) and isinstance(nkind, str)
                        and isinstance(colls, (list, type(None)))):
                    raise index.BadIndex("malformed name definition")
                names.append((nid, name, nkind, tuple(c for c in (colls or []) if isinstance(c, str))))
            for d in _list(header, "dtypes"):
                if not (isinstance(d, list) and len(d) == 2 and _is_id(d[0])):
                    raise index.BadIndex("malformed dtype definition")
                dtypes.append((d[0], index.safe_dtype(d[1])))
            for d in _list(header, "shapes"):
                if not (isinstance(d, list) and len(d) == 2 and _is_id(d[0])):
                    raise index.BadIndex("malformed shape definition")
                shape = d[1]
                if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(
                    _is_id(x) for x in shape
                ):
                    raise index.BadIndex(f"malformed shape {shape!r}")
                shapes.append((d[0], tuple(shape)))
            for nid, name, nkind, colls in names:
                self.names[nid] = (name, nkind, colls)
                self.nid_of[(name, nkind)] = nid
            self.names_version += 1
            self.dtypes.update(dtypes)
            self.shapes.update(shapes)
            return 0
        if kind == "step":
            step, mode, ms = header.get("step"), header.get("mode"), header.get("mode_step")
            if not (_is_id(step) and isinstance(mode, str) and _is_id(ms)):
                raise index.BadIndex("malformed step header")
            t = header.get("time", 0.0)
            if not isinstance(t, (int, float)) or isinstance(t, bool):
                raise index.BadIndex("malformed step time")
            if entries is None:
                entries = np.zeros(0, index.ENTRY_DTYPE)
            old = self.steps.get(step)
            segs = None
            if old is not None:  # a step written in parts (maybe in different segments): merge, newest wins
                merged = np.concatenate([entries, old.entries])
                msegs = np.concatenate([np.full(len(entries), seg, np.int64),
                                        old.segs if old.segs is not None else np.full(len(old.entries), old.seg, np.int64)])
                _, first = np.unique(merged["nid"], return_index=True)
                entries, segs = merged[first], msegs[first]
                if (segs == seg).all():
                    segs = None
            elif len(entries) > 1 and not (entries["nid"][1:] > entries["nid"][:-1]).all():
                entries = np.sort(entries, order="nid")
            self.steps[step] = StepIndex(step, mode, ms, seg, entries, float(t), segs=segs)
            self.mode_steps[(mode, ms)] = step
            return 0 if old is not None else 1
        if kind == "end":
            self.ended = True
            return 0
        self.records.append(header)
        return 0

    # ---- values --------------------------------------------------------------------------
    def _data_path(self, seg: int) -> str:
        return join(self.dir, layout.data_file(seg))

    def _size(self, seg: int, need: int) -> int:
        size = self._sizes.get(seg, -1)
        if size < need:
            size = self.fs.size(self._data_path(seg))
            self._sizes[seg] = size
        return size

    def _entry(self, si: StepIndex, nid: int, what: str) -> Tuple[int, int, int, np.dtype, Tuple[int, ...]]:
        """(segment, offset, nbytes, dtype, shape) of the array stored for `nid` at `si`, checked
        against the index's own definitions."""
        row = si.find_row(nid)
        if row is None:
            raise KeyError(nid)
        _, did, sid, off, nbytes = row
        seg = si.seg if si.segs is None else int(si.segs[si._index_of(nid)])  # rows of a merged step know their segment
        dtype = self.dtypes.get(did)
        shape = self.shapes.get(sid)
        if dtype is None or shape is None:
            raise CorruptRunError(f"{what}: the index refers to an unknown dtype/shape id; the run is damaged")
        if nbytes != math.prod(shape) * dtype.itemsize:  # Python ints: a forged shape cannot overflow
            raise CorruptRunError(f"{what}: index says {nbytes} bytes for shape {shape} {dtype}; the run is damaged")
        return seg, off, nbytes, dtype, shape

    def _check_size(self, seg: int, end: int, what: str) -> None:
        if end > self._size(seg, end):
            raise CorruptRunError(f"{what}: its bytes lie past the end of {layout.data_file(seg)}; the run is damaged")

    def _handle(self, seg: int):
        """An open local data file (call with the lock held)."""
        f = self._handles.get(seg)
        if f is None:
            if len(self._handles) > 32:
                for h in self._handles.values():
                    h.close()
                self._handles.clear()
            f = self._handles[seg] = open(self._data_path(seg), "rb", buffering=0)
        return f

    def _payload(self, rec, raw: np.ndarray, start: int, seg: int, off: int, nbytes: int, dtype: np.dtype,
                 shape: Tuple[int, ...], what: str, pcrc: Optional[int] = None) -> np.ndarray:
        """The array of the record held in `rec` (= raw[start - HEADER_SIZE:...]), after its checks."""
        try:
            payload = framing.check_record(rec, framing.KIND_DATA, payload_crc=pcrc)
        except (framing.TornRecord, framing.BadPayload):
            raise CorruptRunError(
                f"{what}: checksum mismatch in {self.worker}/{layout.data_file(seg)} at byte {off}; "
                "the stored bytes are damaged (refusing to return them)"
            ) from None
        if len(payload) != nbytes:  # the index and the record disagree: never return neighbouring bytes
            raise CorruptRunError(f"{what}: the record at byte {off} holds {len(payload)} bytes, the index says "
                                  f"{nbytes}; the run is damaged")
        if not dtype.itemsize:  # zero-width: only an empty array is plausible (no forged huge shape)
            if math.prod(shape):
                raise CorruptRunError(f"{what}: zero-width dtype {dtype} with shape {shape}; the run is damaged")
            return np.zeros(shape, dtype)
        return raw[start:start + nbytes].view(dtype).reshape(shape)

    def read(self, si: StepIndex, nid: int, what: str) -> np.ndarray:
        """The array stored for name id `nid` at step `si`; `what` names it in errors."""
        seg, off, nbytes, dtype, shape = self._entry(si, nid, what)
        total = nbytes + framing.OVERHEAD
        path = self._data_path(seg)
        # Read into fresh, uninitialised memory (no zero-fill pass); the array returned is a
        # view of it. Big payloads are placed at their file offset modulo 4 KiB, where that
        # keeps the dtype aligned: the kernel's copy out of the page cache then runs at full
        # speed (see framing.pad_before); otherwise the payload starts 64-byte aligned.
        if nbytes > _PAGE and (off + framing.HEADER_SIZE) % max(dtype.alignment, 1) == 0:
            raw = np.empty(total + _PAGE, np.uint8)
            pad = (off - _address(raw)) % _PAGE  # payload address = file offset, modulo a page
        else:
            raw = np.empty(total + _ALIGN, np.uint8)
            pad = (-framing.HEADER_SIZE - _address(raw)) % _ALIGN
        rec = memoryview(raw)[pad:pad + total]
        with self._lock:
            self._check_size(seg, off + total, what)
            if self.local:
                f = self._handle(seg)
                f.seek(off)
                got, pcrc = 0, 0
                head, pay_end = framing.HEADER_SIZE, framing.HEADER_SIZE + nbytes
                # chunked, so each chunk is checksummed while it is still in the CPU cache, or,
                # for a big payload, on a helper thread while the next chunk is read
                summer = framing.Checksummer() if nbytes >= framing.PARALLEL_CRC else None
                chunk = _CHUNK if summer is None else 4 * _CHUNK
                while got < total:
                    n = f.readinto(rec[got:min(total, got + chunk)])
                    if not n:
                        break
                    lo, hi = max(got, head), min(got + n, pay_end)
                    if hi > lo:
                        if summer is None:
                            pcrc = framing.crc(rec[lo:hi], pcrc)
                        else:
                            summer.add(rec[lo:hi])
                    got += n
                if summer is not None:
                    pcrc = summer.value()
            else:
                fetched = self.fs.cat_file(path, start=off, end=off + total)
                got = len(fetched)
                if got == total:
                    rec[:] = fetched
                pcrc = None
        if got != total:
            raise CorruptRunError(f"{what}: short read from {layout.data_file(seg)}; the run is damaged")
        return self._payload(rec, raw, pad + framing.HEADER_SIZE, seg, off, nbytes, dtype, shape, what, pcrc)

    def read_many(self, wanted: List[Tuple[StepIndex, int, str]]) -> List[object]:
        """Several arrays at once: records lying close together in a data file (a step's
        tensors are written side by side) are fetched in one request into one buffer, and each
        array is a view of it. Returns, per (step index, nid, what), the array or the exception
        read() would have raised for it."""
        out: List[object] = [None] * len(wanted)
        todo = []
        for i, (si, nid, what) in enumerate(wanted):
            try:
                todo.append((*self._entry(si, nid, what), what, i))
            except (KeyError, CorruptRunError) as e:
                out[i] = e
        todo.sort(key=lambda t: (t[0], t[1]))
        span: list = []
        for t in todo:
            if span and (t[0] != span[0][0] or t[1] - _end(span[-1]) > _GAP or _end(t) - span[0][1] > _SPAN):
                self._read_span(span, out)
                span = []
            span.append(t)
        if span:
            self._read_span(span, out)
        return out

    def _read_span(self, span: list, out: List[object]) -> None:
        """Read the records of `span` (one segment, by offset) with one request."""
        seg, lo = span[0][0], span[0][1]
        hi = max(_end(t) for t in span)
        with self._lock:
            raw, base = self._pool.get(hi - lo + _PAGE)
        pad = (lo - base) % _PAGE  # every payload at its file offset, modulo a page
        buf = memoryview(raw)[pad:pad + hi - lo]
        try:
            with self._lock:
                self._check_size(seg, hi, span[-1][5])
                if self.local:
                    f = self._handle(seg)
                    f.seek(lo)
                    got = 0
                    while got < hi - lo:
                        n = f.readinto(buf[got:])
                        if not n:
                            break
                        got += n
                else:
                    fetched = self.fs.cat_file(self._data_path(seg), start=lo, end=hi)
                    got = len(fetched)
                    if got == hi - lo:
                        buf[:] = fetched
            if got != hi - lo:
                raise CorruptRunError(f"{span[-1][5]}: short read from {layout.data_file(seg)}; the run is damaged")
        except Exception as e:  # noqa: BLE001 - the same error for each array of the span
            for t in span:
                out[t[6]] = e
            return
        for seg, off, nbytes, dtype, shape, what, i in span:
            start = pad + off - lo + framing.HEADER_SIZE
            rec = buf[off - lo:off - lo + nbytes + framing.OVERHEAD]
            try:
                arr = self._payload(rec, raw, start, seg, off, nbytes, dtype, shape, what)
                if dtype.itemsize and (base + start) % max(dtype.alignment, 1):
                    arr = arr.copy()  # a payload the writer did not align: an aligned copy
                out[i] = arr
            except CorruptRunError as e:
                out[i] = e

    def close(self) -> None:
        for h in [*self._handles.values(), *self._index_fh.values()]:
            h.close()
        self._handles.clear()
        self._index_fh.clear()
