"""Reading one worker's records: tail the index segments, fetch one tensor's bytes on demand.

Opening a run reads only index files. A value lookup reads exactly one data record
(header + payload + checksum) at the offset the index gives, verifies its checksum, and
returns the array. Nothing in a run can run code: JSON and raw bytes of whitelisted dtypes.
"""
from __future__ import annotations

import json
import logging
import math
import threading
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

    _nids: Optional[np.ndarray] = None

    def _index_of(self, nid: int) -> int:
        nids = self._nids
        if nids is None:
            nids = self._nids = self.entries["nid"]
        n = len(nids)
        if nid < n and nids[nid] == nid:  # the common case: every tensor saved, ids dense
            return nid
        i = int(nids.searchsorted(nid))
        return i if i < n and nids[i] == nid else -1

    def find(self, nid: int) -> Optional[np.void]:
        """The index row of name id `nid` at this step, or None."""
        i = self._index_of(nid)
        return self.entries[i] if i >= 0 else None

    def find_row(self, nid: int) -> Optional[tuple]:
        """Like find, as a plain tuple (nid, dtype id, shape id, offset, nbytes): cheaper to use."""
        i = self._index_of(nid)
        return self.entries[i].item() if i >= 0 else None


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
        self.problems: List[str] = []
        self._offsets: Dict[int, int] = {}
        self._sizes: Dict[int, int] = {}
        self._handles: Dict[int, object] = {}
        self._tails_noted: set = set()
        self._lock = threading.RLock()
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
            if not self.local:
                self.fs.invalidate_cache(self.dir)
            entries = self.fs.ls(self.dir, detail=not self.local)
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

    def _read_from(self, path: str, start: int, size: Optional[int]) -> bytes:
        if self.local:
            with open(path, "rb") as f:
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
                start = self._offsets.get(seg, 0)
                try:
                    buf = self._read_from(join(self.dir, layout.index_file(seg)), start, sizes[seg])
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

    def read(self, si: StepIndex, nid: int, what: str) -> np.ndarray:
        """The array stored for name id `nid` at step `si`; `what` names it in errors."""
        i = si._index_of(nid)
        if i < 0:
            raise KeyError(nid)
        _, did, sid, off, nbytes = si.entries[i].item()
        seg = si.seg if si.segs is None else int(si.segs[i])  # rows of a merged step know their segment
        dtype = self.dtypes.get(did)
        shape = self.shapes.get(sid)
        if dtype is None or shape is None:
            raise CorruptRunError(f"{what}: the index refers to an unknown dtype/shape id; the run is damaged")
        if nbytes != math.prod(shape) * dtype.itemsize:  # Python ints: a forged shape cannot overflow
            raise CorruptRunError(f"{what}: index says {nbytes} bytes for shape {shape} {dtype}; the run is damaged")
        total = nbytes + framing.OVERHEAD
        path = self._data_path(seg)
        # Read into fresh, uninitialised memory (no zero-fill pass); the array returned is a
        # view of it. Big payloads are placed at their file offset modulo 4 KiB, where that
        # keeps the dtype aligned: the kernel's copy out of the page cache then runs at full
        # speed (see framing.pad_before); otherwise the payload starts 64-byte aligned.
        if nbytes > _PAGE and (off + framing.HEADER_SIZE) % max(dtype.alignment, 1) == 0:
            raw = np.empty(total + _PAGE, np.uint8)
            pad = (off - raw.ctypes.data) % _PAGE  # payload address = file offset, modulo a page
        else:
            raw = np.empty(total + _ALIGN, np.uint8)
            pad = (-framing.HEADER_SIZE - raw.ctypes.data) % _ALIGN
        rec = memoryview(raw)[pad:pad + total]
        with self._lock:
            if off + total > self._size(seg, off + total):
                raise CorruptRunError(f"{what}: its bytes lie past the end of {layout.data_file(seg)}; the run is damaged")
            if self.local:
                f = self._handles.get(seg)
                if f is None:
                    if len(self._handles) > 32:
                        for h in self._handles.values():
                            h.close()
                        self._handles.clear()
                    f = self._handles[seg] = open(path, "rb", buffering=0)
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
        start = pad + framing.HEADER_SIZE
        return raw[start:start + nbytes].view(dtype).reshape(shape)

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()
