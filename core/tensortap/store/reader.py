"""Reading one worker's records: tail the index segments, fetch one tensor's bytes on demand.

Opening a run reads only index files. A value lookup reads exactly one data record
(header + payload + checksum) at the offset the index gives, verifies its checksum (bound, from
format 3, to the entry it was written for), and returns the array. From format 4 a small array
lives inside a pack record shared by its step's small arrays: its lookup reads and checks that pack.
Nothing in a run can run code: JSON and raw bytes of whitelisted dtypes; only regular files
inside the run are opened.
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import stat
import struct
import sys
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
import io
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

import numpy as np

from ..errors import CorruptRunError, NotARunError
from . import framing, index, layout, safe_io
from .fs import FileSystem, is_local, join

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import TypeGuard

log = logging.getLogger("tensortap")
MAX_NDIM = 64
_ALIGN = 64
_PAGE = 4096
_CHUNK = 1 << 20
_GAP = 256 * 1024  # read_many: records closer than this share one request (the bytes between are read too)
_SPAN = 64 << 20  # ... up to this many bytes per request
INDEX_CHUNK = 16 << 20  # index bytes read per request
MAX_INDEX_RECORD = 256 << 20  # a longer index record is damage (the name table of 1M tensors is ~100 MB)


class _BufferPool:
    """Byte buffers for read_many, reused once nothing refers to them any more (every array
    read into one is a view of it, and holds it): a live reader reading step after step
    then touches memory that is already mapped, instead of fresh pages the kernel must fault
    in and zero (measured ~2x slower for a 2 MB step)."""

    def __init__(self, max_buffers: int = 8, max_bytes: int = 64 << 20) -> None:
        self.max_buffers, self.max_bytes = max_buffers, max_bytes
        self._bufs: List[Tuple[np.ndarray[Any, Any], int]] = []  # (buffer, its address)

    def get(self, n: int) -> Tuple[np.ndarray[Any, Any], int]:
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


def _address(arr: np.ndarray[Any, Any]) -> int:
    address: int = arr.__array_interface__["data"][0]
    return address


def _end(entry: Tuple[Any, ...]) -> int:
    """File offset after the record of a (seg, offset, nbytes, ...) entry."""
    end: int = entry[1] + entry[2] + framing.OVERHEAD
    return end


def _is_id(x: Any) -> "TypeGuard[int]":
    """A non-negative JSON integer (not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _list(header: Dict[str, Any], key: str) -> List[Any]:
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
    entries: np.ndarray[Any, Any]  # index.ENTRY_DTYPE rows, sorted by nid
    time: float
    #: per-row segment, only for a step written in parts that landed in different segments
    segs: Optional[np.ndarray[Any, Any]] = None

    _pos: Optional[Dict[int, int]] = None  # nid -> row, made once the step is looked up often
    _rows: Optional[List[Tuple[Any, ...]]] = None  # the rows as Python tuples, made with _pos
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

    def find_row(self, nid: int) -> Optional[Tuple[Any, ...]]:
        """Like find, as a plain tuple (nid, dtype id, shape id, offset, nbytes): cheaper to use."""
        i = self._index_of(nid)
        if i < 0:
            return None
        rows = self._rows
        if rows is None:
            if self._pos is None:
                row: Tuple[Any, ...] = self.entries[i].item()
                return row
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
        self._steps: "OrderedDict[int, weakref.ref[StepIndex]]" = OrderedDict()
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
        """The directory's entries (FileNotFoundError if it does not exist; CorruptRunError if
        it is not a directory)."""
        st = os.stat(self.path)
        if not stat.S_ISDIR(st.st_mode):
            raise CorruptRunError(f"{self.path} is a file where a folder should be: not a run tensortap can "
                                  "read (remove it, or restore the folder)")
        if st.st_mtime_ns != self._mtime:
            self._names = os.listdir(self.path)
            # trust the mtime only once it is a second old
            self._mtime = st.st_mtime_ns if time.time_ns() - st.st_mtime_ns > 1_000_000_000 else None
        return self._names


class WorkerReader:
    """The index of one worker, kept up to date by `refresh()`."""

    def __init__(self, fs: FileSystem, root: str, worker: str, root_real: Optional[str] = None) -> None:
        self.fs = fs
        self.local = is_local(fs)
        self.root = root
        self.worker = worker
        self.dir = join(root, layout.WORKERS_DIR, worker)
        self.root_real = (root_real or os.path.realpath(root)) if self.local else ""  # "": not a local run
        if self.local:
            safe_io.inside(self.root_real, self.dir)  # a worker folder linked from elsewhere is refused
        m = layout.WORKER_RE.match(worker)
        self.rank = int(m.group(1)) if m else 0
        #: format 3+: every segment opens with its header and data records are bound to their entries
        self.bound = False
        self._token: Optional[bytes] = None  # the writer every segment of this worker must name
        self._tokens: Dict[int, bytes] = {}  # segment -> the writer its header names
        self._skip: Set[int] = set()  # segments refused whole (misplaced, foreign, headless)
        self._noted: Set[Any] = set()  # problems already listed
        self._data_segs: Set[int] = set()  # data segments present at the last listing
        self._seg_list: List[int] = []  # index segments present at the last listing
        self._meta_missing = False
        self.meta: Dict[str, Any] = {}
        self.names: Dict[int, Tuple[str, str, Tuple[str, ...]]] = {}
        self.nid_of: Dict[Tuple[str, str], int] = {}
        self.dtypes: Dict[int, np.dtype[Any]] = {}
        self.shapes: Dict[int, Tuple[int, ...]] = {}
        self.steps: Dict[int, StepIndex] = {}
        self.mode_steps: Dict[Tuple[str, int], int] = {}
        self.records: List[Dict[str, Any]] = []  # rule results, events
        self.ended = False
        #: bumped by every index record applied (`names_version`: by every name definition);
        #: Trial keeps what it derived from the index until they change
        self.version = 0
        self.names_version = 0
        self.problems: List[str] = []
        self._offsets: Dict[int, int] = {}
        #: segment -> its pack records (format 4): their offsets, sorted, and (payload length, step) of each
        self._packs: Dict[int, Tuple[List[int], List[Tuple[int, int]]]] = {}
        self._sizes: Dict[int, int] = {}
        self._handles: Dict[int, io.FileIO] = {}
        self._tails_noted: Set[Tuple[int, int]] = set()
        self._done: Set[int] = set()  # local index segments read to their end (a later one exists)
        self._pool = _BufferPool()
        self._index_fh: Dict[int, io.FileIO] = {}  # local: the open index segment last read
        self._lock = threading.RLock()
        self._watch = DirWatch(self.dir) if self.local else None
        self._load_meta()

    def _note(self, key: Any, text: str) -> None:
        """List a problem once."""
        if key not in self._noted:
            self._noted.add(key)
            self.problems.append(text)

    def _load_meta(self) -> None:
        path = join(self.dir, layout.META)
        try:
            raw = safe_io.read_small(self.fs, self.local, self.root_real, path)
        except (FileNotFoundError, NotADirectoryError):
            self.meta = {}
            self._meta_missing = True  # a writer that has claimed the worker but not written yet: look again
            return
        self._meta_missing = False
        try:
            meta = safe_io.loads(raw, "meta.json")
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
        if isinstance(fv, int) and fv >= 3:
            self.bound = True
        tok = meta.get("writer")
        if self._token is None and isinstance(tok, str) and len(tok) == 32:
            try:
                self._token = bytes.fromhex(tok)
            except ValueError:
                pass

    # ---- index ---------------------------------------------------------------------------
    def _segments(self) -> Dict[int, Optional[int]]:
        """Index segment -> its size in bytes (None locally, where files grow in place)."""
        entries: List[Any]  # names locally, fsspec's entries (dicts) elsewhere
        try:
            if self._watch is not None:
                entries = self._watch.names()
            else:
                self.fs.invalidate_cache(self.dir)
                entries = self.fs.ls(self.dir, detail=True)
        except FileNotFoundError:
            return {}
        segs: Dict[int, Optional[int]] = {}
        data = set()
        e: Any
        for e in entries:
            p = e if self.local else e["name"]
            base = p.rstrip("/").rsplit("/", 1)[-1]
            m = layout.INDEX_RE.match(base)
            if m:
                segs[int(m.group(1))] = None if self.local else int(e.get("size") or 0)
                continue
            d = layout.DATA_RE.match(base)
            if d:
                data.add(int(d.group(1)))
                if not self.local:  # objects are immutable once visible: their size is final, no HEAD per lookup
                    self._sizes[int(d.group(1))] = int(e.get("size") or 0)
        self._data_segs = data
        self._seg_list = sorted(segs)
        return dict(sorted(segs.items()))

    def _index_handle(self, seg: int, path: str) -> io.FileIO:
        """The open local index segment (the one being written stays open: a live reader reads it again and again)."""
        f = self._index_fh.get(seg)
        if f is None:
            for old in self._index_fh.values():
                old.close()
            self._index_fh.clear()
            f = self._index_fh[seg] = safe_io.open_regular(self.root_real, path)
        return f

    def _read_from(self, seg: int, path: str, start: int, size: Optional[int], n: int) -> bytes:
        """Up to `n` bytes of an index segment from `start`."""
        if self.local:
            f = self._index_handle(seg, path)
            n = min(n, os.fstat(f.fileno()).st_size - start)  # read(n) would allocate n bytes first
            if n <= 0:
                return b""
            f.seek(start)
            return f.read(n)
        if size is not None and start >= size:
            return b""  # nothing new (and a ranged GET past the end is an error on S3)
        got: bytes = self.fs.cat_file(path, start=start, end=min(size, start + n) if size is not None else start + n)
        return got

    def _file_size(self, seg: int, path: str, size: Optional[int]) -> int:
        return os.fstat(self._index_handle(seg, path).fileno()).st_size if self.local else int(size or 0)

    def refresh(self) -> int:
        """Read index records appended since the last call; returns how many steps are new."""
        with self._lock:
            if self._meta_missing:
                self._load_meta()
            new = 0
            sizes = self._segments()
            segs = list(sizes)
            for seg in segs:
                if seg in self._done or seg in self._skip:
                    continue
                new += self._read_segment(seg, sizes[seg], last=seg == segs[-1])
                if self.local and seg != segs[-1]:
                    # the writer closes a segment before it creates the next one: read to its end now
                    self._done.add(seg)
            self._note_gaps(segs)
            return new

    def _read_segment(self, seg: int, size: Optional[int], last: bool) -> int:
        """Apply the index records of segment `seg` appended since the last look (read in chunks:
        a huge or hostile file is never read whole); returns how many steps are new."""
        name = layout.index_file(seg)
        path = join(self.dir, name)
        pos = first = self._offsets.get(seg, 0)
        new, want, head = 0, INDEX_CHUNK, b""
        try:
            while True:
                buf = self._read_from(seg, path, pos, size, want)
                if pos == 0:
                    head = bytes(buf[:4])
                end = 0
                for item in framing.iter_records_verbose(buf, copy=False):  # buf is immutable bytes
                    end = item.next_offset
                    at = pos + item.offset
                    if isinstance(item, framing.BadPayload):
                        self.problems.append(f"{self.worker} {name}: record at byte {at} failed its checksum and "
                                             "was skipped")
                        continue
                    if item.kind != framing.KIND_INDEX:
                        self.problems.append(f"{self.worker} {name}: unexpected record kind")
                        continue
                    try:
                        header, entries = index.decode(item.payload)
                        refused = self._check_segment(seg, header)
                        if refused:
                            self._skip.add(seg)
                            self._note(("seg", seg), f"{self.worker} {name}: {refused}; its steps are not read")
                            return new
                        if header["type"] != "segment":
                            new += self._apply(seg, header, entries)
                    except (index.BadIndex, TypeError, ValueError, KeyError, OverflowError) as e:
                        # checksum-valid but malformed (a forged or foreign file): data, never code
                        self.problems.append(f"{self.worker} {name}: bad index record at byte {at} "
                                             f"({type(e).__name__}: {e}); skipped")
                pos += end
                if len(buf) < want:
                    break  # the end of what the file holds now
                if end:
                    want = INDEX_CHUNK
                    continue
                need = framing.record_size(buf)  # one record longer than the chunk: read it whole
                if need is None or need <= want or need > MAX_INDEX_RECORD:
                    break
                want = need
            total = self._file_size(seg, path, size)
        except FileNotFoundError:
            return new  # removed since listed: the next listing shows the gap
        self._offsets[seg] = pos
        foreign = pos == 0 and len(head) >= 4 and head != framing.MAGIC
        self._note_unreadable_tail(seg, pos, total, last, foreign)
        if total == 0 and (not last or self.ended) and first == 0:
            self._note(("empty", seg), f"{self.worker} {name} is empty (emptied or truncated?): the steps it indexed "
                                       "are lost")
        return new

    def _check_segment(self, seg: int, header: Dict[str, Any]) -> Optional[str]:
        """Why segment `seg` must be refused whole (else None), given one of its index records:
        its opening "segment" record must name this segment and this worker's writer."""
        if header.get("type") != "segment":
            if seg not in self._tokens and self.bound:  # its header was damaged: check its records
                self._note(("headless", seg), f"{self.worker} {layout.index_file(seg)}: its segment header is "
                                              "missing or damaged; its records are checked against this worker's "
                                              "writer")
            return None
        num, writer = header.get("seg"), header.get("writer")
        if not (isinstance(num, int) and isinstance(writer, str) and len(writer) == 32):
            raise index.BadIndex("malformed segment header")
        token = bytes.fromhex(writer)
        if seg in self._tokens:
            if self._tokens[seg] != token:
                raise index.BadIndex("a second, different segment header")
            return None
        if num != seg:
            return f"it holds the index of segment {num} (a misplaced or copied file)"
        if self._token is None:
            self._token = token
        elif token != self._token:
            return (f"it was written by another writer ({writer[:8]}…, this worker's is "
                    f"{self._token.hex()[:8]}…): a file from another run")
        self._tokens[seg] = token
        self.bound = True
        return None

    def _note_gaps(self, segs: List[int]) -> None:
        """A segment number missing below the newest is a lost index (the writer never skips one
        from format 3 on; older writers removed empty ones, so there only with its data left)."""
        if not segs:
            return
        present = set(segs)
        for k in range(segs[-1]):
            if k not in present and (self.bound or k in self._data_segs):
                self._note(("gap", k), f"{self.worker} {layout.index_file(k)} is missing (deleted?) while later "
                                       "segments exist: the steps it indexed are lost")

    def _note_unreadable_tail(self, seg: int, good_end: int, size: int, last: bool, foreign: bool) -> None:
        """Bytes after the last readable record are normal at the tail of the segment being
        written; anywhere else (an older segment, a closed run, a file that does not even start
        like a record) they are damage: say so once."""
        if good_end >= size or (last and not self.ended and not foreign):
            return
        key = (seg, good_end)
        if key in self._tails_noted:
            return
        self._tails_noted.add(key)
        self.problems.append(
            f"{self.worker} {layout.index_file(seg)}: {size - good_end} byte(s) from byte {good_end} are not a "
            "valid record (a torn write or a damaged/foreign file); ignored"
        )

    def _stat_size(self, path: str) -> int:
        return os.stat(path).st_size if self.local else int(self.fs.size(path))

    def file_problems(self, writer_gone: bool) -> List[str]:
        """What only a look at the files tells, worded for `trial.problems`: data segments the
        index refers to that are missing, and, when the writer is gone without closing the run,
        the torn tail it left (bytes of the step it was writing)."""
        with self._lock:
            out = []
            used: Set[Any] = set()
            for si in self.steps.values():
                used.update(si.segs.tolist() if si.segs is not None else (si.seg,))
            if self._meta_missing and self._seg_list:
                out.append(f"{self.worker}/{layout.META} is missing (deleted?): the worker's framework, rank and "
                           "configuration are unknown")
            for seg in sorted(used - self._data_segs):
                out.append(f"{self.worker} {layout.data_file(seg)} is missing (deleted?): the values of the steps "
                           f"indexed in {layout.index_file(seg)} cannot be read")
            if writer_gone and not self.ended and self._seg_list:
                last = self._seg_list[-1]
                torn = []
                try:
                    idx = self._stat_size(join(self.dir, layout.index_file(last)))
                    if idx > self._offsets.get(last, 0):
                        torn.append(f"{idx - self._offsets.get(last, 0)} byte(s) of {layout.index_file(last)}")
                    end = self.indexed_end(last)
                    if last in self._data_segs:
                        data = self._stat_size(self._data_path(last))
                        if data > end:
                            torn.append(f"{data - end} byte(s) of {layout.data_file(last)}")
                except (OSError, CorruptRunError):
                    pass
                if torn:
                    out.append(f"{self.worker}: the writer stopped without closing the run; the torn tail it left "
                               f"({', '.join(torn)}: the step it was writing) is ignored")
            return out

    def indexed_end(self, seg: int) -> int:
        """The file offset after the last data record of segment `seg` the index refers to: the
        bytes of its data file past it belong to no indexed step (a killed writer's torn tail)."""
        with self._lock:
            end = 0
            starts, info = self._packs.get(seg, ([], []))
            p_end = np.array(starts, np.int64) + np.array([p_len for p_len, _ in info], np.int64) + framing.OVERHEAD
            if starts:
                end = int(p_end.max())
            for si in self.steps.values():
                if si.segs is None and si.seg != seg:
                    continue
                e = si.entries if si.segs is None else si.entries[si.segs == seg]
                if starts and len(e):  # arrays inside packs: their packs' ends counted above
                    k = np.searchsorted(starts, e["offset"], side="right") - 1
                    e = e[~((k >= 0) & (e["offset"] < p_end[np.maximum(k, 0)]))]
                if len(e):
                    end = max(end, int((e["offset"] + e["nbytes"]).max()) + framing.OVERHEAD)
            return end

    def _apply(self, seg: int, header: Dict[str, Any], entries: Optional[np.ndarray[Any, Any]]) -> int:
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
            packs = _list(header, "packs")
            if not all(isinstance(p, list) and len(p) == 2 and _is_id(p[0]) and _is_id(p[1]) for p in packs):
                raise index.BadIndex("malformed pack list")
            if packs:
                starts, info = self._packs.setdefault(seg, ([], []))
                for p_off, p_len in packs:
                    i = bisect.bisect_left(starts, p_off)
                    if i == len(starts) or starts[i] != p_off:
                        starts.insert(i, p_off)
                        info.insert(i, (p_len, step))
            if entries is None:
                entries = np.zeros(0, index.ENTRY_DTYPE)
            old = self.steps.get(step)
            segs = None
            if old is not None:  # a step written in parts (maybe in different segments): merge, newest wins
                merged = np.concatenate([entries, old.entries])
                old_segs = old.segs if old.segs is not None else np.full(len(old.entries), old.seg, np.int64)
                msegs = np.concatenate([np.full(len(entries), seg, np.int64), old_segs])
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
            if self.local:  # of the file the reads will use (a regular file inside the run)
                size = os.fstat(self._handle(seg).fileno()).st_size
            else:
                size = self.fs.size(self._data_path(seg))
            self._sizes[seg] = size
        return size

    def _missing(self, seg: int, what: str) -> CorruptRunError:
        return CorruptRunError(f"{what}: {self.worker}/{layout.data_file(seg)} is missing (deleted, or never "
                               "copied with the run); the run is damaged")

    def _seed(self, seg: int, step: int, nid: int, off: int, what: str) -> int:
        """The checksum seed binding the record at (seg, off) to this entry (0: a format 1-2 segment)."""
        token = self._tokens.get(seg) or (self._token if self.bound else None)
        if token is None:
            if self.bound:
                raise CorruptRunError(f"{what}: {self.worker}/{layout.index_file(seg)} names no writer, so its "
                                      "records cannot be checked; the run is damaged")
            return 0
        try:
            return framing.binding(token, self.rank, seg, step, nid, off)
        except struct.error:  # a forged step, id or offset beyond the fields' range
            raise CorruptRunError(f"{what}: the index entry is out of range; the run is damaged") from None

    def _entry(self, si: StepIndex, nid: int,
               what: str) -> Tuple[int, int, int, np.dtype[Any], Tuple[int, ...], int, int, int]:
        """(segment, record offset, record payload length, dtype, shape, checksum seed, the array's
        offset in that payload, its nbytes) of the array stored for `nid` at `si`, checked against
        the index's own definitions. A record holds one array, or (format 4) is a pack of several."""
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
        packs = self._packs.get(seg)
        if packs is not None:
            starts, info = packs
            i = bisect.bisect_right(starts, off) - 1
            if i >= 0 and off < starts[i] + framing.OVERHEAD + info[i][0]:  # inside pack i
                p_off, (p_len, p_step) = starts[i], info[i]
                at = off - p_off - framing.HEADER_SIZE
                if at < 0 or at + nbytes > p_len or p_step != si.step:
                    raise CorruptRunError(f"{what}: the index entry points outside its step's pack records; the run "
                                          "is damaged")
                seed = self._seed(seg, si.step, framing.PACK_NID, p_off, what)
                return seg, p_off, p_len, dtype, shape, seed, at, nbytes
        return seg, off, nbytes, dtype, shape, self._seed(seg, si.step, nid, off, what), 0, nbytes

    def _check_size(self, seg: int, end: int, what: str) -> None:
        if end > self._size(seg, end):
            raise CorruptRunError(f"{what}: its bytes lie past the end of {layout.data_file(seg)}; the run is damaged")

    def _handle(self, seg: int) -> io.FileIO:
        """An open local data file (call with the lock held)."""
        f = self._handles.get(seg)
        if f is None:
            if len(self._handles) > 32:
                for h in self._handles.values():
                    h.close()
                self._handles.clear()
            f = self._handles[seg] = (safe_io.open_regular(self.root_real, self._data_path(seg)) if self.local
                                      else open(self._data_path(seg), "rb", buffering=0))
        return f

    def _payload(self, rec: memoryview, raw: np.ndarray[Any, Any], start: int, seg: int, off: int, nbytes: int,
                 dtype: np.dtype[Any], shape: Tuple[int, ...], what: str, seed: int,
                 pcrc: Optional[int] = None, at: int = 0, size: Optional[int] = None) -> np.ndarray[Any, Any]:
        """The array of the record held in `rec` (= raw[start - HEADER_SIZE:...]), after its checks:
        `size` bytes (default: all `nbytes`) from byte `at` of its payload (an array in a pack)."""
        try:
            payload = framing.check_record(rec, framing.KIND_DATA, payload_crc=pcrc, seed=seed)
        except (framing.TornRecord, framing.BadPayload):
            why = ("the stored bytes are damaged, or the record there was written for another step, tensor or run "
                   "(a misplaced or copied segment)") if self.bound else "the stored bytes are damaged"
            raise CorruptRunError(
                f"{what}: checksum mismatch in {self.worker}/{layout.data_file(seg)} at byte {off}; "
                f"{why} (refusing to return them)"
            ) from None
        if len(payload) != nbytes:  # the index and the record disagree: never return neighbouring bytes
            raise CorruptRunError(f"{what}: the record at byte {off} holds {len(payload)} bytes, the index says "
                                  f"{nbytes}; the run is damaged")
        if size is None:
            size = nbytes
        if not dtype.itemsize:  # zero-width: only an empty array is plausible (no forged huge shape)
            if math.prod(shape):
                raise CorruptRunError(f"{what}: zero-width dtype {dtype} with shape {shape}; the run is damaged")
            return np.zeros(shape, dtype)
        return raw[start + at:start + at + size].view(dtype).reshape(shape)

    def read(self, si: StepIndex, nid: int, what: str) -> np.ndarray[Any, Any]:
        """The array stored for name id `nid` at step `si`; `what` names it in errors."""
        seg, off, nbytes, dtype, shape, seed, at, size = self._entry(si, nid, what)
        packed = size != nbytes or at != 0
        total = nbytes + framing.OVERHEAD
        path = self._data_path(seg)
        # Read into fresh, uninitialised memory (no zero-fill pass); the array returned is a
        # view of it. Big payloads are placed at their file offset modulo 4 KiB, where that
        # keeps the dtype aligned: the kernel's copy out of the page cache then runs at full
        # speed (see framing.pad_before); otherwise the payload starts 64-byte aligned.
        # A pack's arrays sit at file offsets aligned for their dtypes: it is placed at its file offset modulo 64.
        if nbytes > _PAGE and (packed or (off + framing.HEADER_SIZE) % max(dtype.alignment, 1) == 0):
            raw = np.empty(total + _PAGE, np.uint8)
            pad = (off - _address(raw)) % _PAGE  # payload address = file offset, modulo a page
        elif packed:
            raw = np.empty(total + _ALIGN, np.uint8)
            pad = (off - _address(raw)) % _ALIGN
        else:
            raw = np.empty(total + _ALIGN, np.uint8)
            pad = (-framing.HEADER_SIZE - _address(raw)) % _ALIGN
        rec = raw.data[pad:pad + total]
        with self._lock:
            try:
                self._check_size(seg, off + total, what)
            except FileNotFoundError:
                raise self._missing(seg, what) from None
            if self.local:
                f = self._handle(seg)
                f.seek(off)
                got, pcrc = 0, seed
                head, pay_end = framing.HEADER_SIZE, framing.HEADER_SIZE + nbytes
                # chunked, so each chunk is checksummed while it is still in the CPU cache, or,
                # for a big payload, on a helper thread while the next chunk is read
                summer = framing.Checksummer(seed) if nbytes >= framing.PARALLEL_CRC else None
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
                try:
                    fetched = self.fs.cat_file(path, start=off, end=off + total)
                except FileNotFoundError:
                    raise self._missing(seg, what) from None
                got = len(fetched)
                if got == total:
                    rec[:] = fetched
                pcrc = None
        if got != total:
            raise CorruptRunError(f"{what}: short read from {layout.data_file(seg)}; the run is damaged")
        return self._payload(rec, raw, pad + framing.HEADER_SIZE, seg, off, nbytes, dtype, shape, what, seed, pcrc,
                             at, size)

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
        todo.sort(key=lambda t: (t[0], t[1]))  # t: (seg, offset, nbytes, dtype, shape, seed, at, size, what, i)
        span: List[Tuple[Any, ...]] = []
        for t in todo:
            if span and (t[0] != span[0][0] or t[1] - _end(span[-1]) > _GAP or _end(t) - span[0][1] > _SPAN):
                self._read_span(span, out)
                span = []
            span.append(t)
        if span:
            self._read_span(span, out)
        return out

    def _read_span(self, span: List[Tuple[Any, ...]], out: List[object]) -> None:
        """Read the records of `span` (one segment, by offset) with one request."""
        seg, lo = span[0][0], span[0][1]
        hi = max(_end(t) for t in span)
        with self._lock:
            raw, base = self._pool.get(hi - lo + _PAGE)
        pad = (lo - base) % _PAGE  # every payload at its file offset, modulo a page
        buf = raw.data[pad:pad + hi - lo]
        try:
            with self._lock:
                try:
                    self._check_size(seg, hi, span[-1][8])
                except FileNotFoundError:
                    raise self._missing(seg, span[-1][8]) from None
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
                    try:
                        fetched = self.fs.cat_file(self._data_path(seg), start=lo, end=hi)
                    except FileNotFoundError:
                        raise self._missing(seg, span[-1][8]) from None
                    got = len(fetched)
                    if got == hi - lo:
                        buf[:] = fetched
            if got != hi - lo:
                raise CorruptRunError(f"{span[-1][8]}: short read from {layout.data_file(seg)}; the run is damaged")
        except Exception as e:  # noqa: BLE001 - the same error for each array of the span
            for t in span:
                out[t[9]] = e
            return
        crcs: Dict[int, int] = {}  # pack offset -> its payload's checksum: a pack is summed once, not per array
        for seg, off, nbytes, dtype, shape, seed, at, size, what, i in span:
            start = pad + off - lo + framing.HEADER_SIZE
            rec = buf[off - lo:off - lo + nbytes + framing.OVERHEAD]
            pcrc = None
            if size != nbytes or at:
                pcrc = crcs.get(off)
                if pcrc is None:
                    pcrc = crcs[off] = framing.crc(rec[framing.HEADER_SIZE:framing.HEADER_SIZE + nbytes], seed)
            try:
                arr = self._payload(rec, raw, start, seg, off, nbytes, dtype, shape, what, seed, pcrc, at, size)
                if dtype.itemsize and (base + start + at) % max(dtype.alignment, 1):
                    arr = arr.copy()  # a payload the writer did not align: an aligned copy
                out[i] = arr
            except CorruptRunError as e:
                out[i] = e

    def close(self) -> None:
        for h in [*self._handles.values(), *self._index_fh.values()]:
            h.close()
        self._handles.clear()
        self._index_fh.clear()
