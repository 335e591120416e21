"""Record framing: every byte in a run file belongs to a checksummed record.

Layout of one record (little-endian):

    magic  b"TTR1"           4 bytes
    kind   uint8             1   (KIND_DATA, KIND_INDEX, KIND_PAD)
    length uint64            8   payload length
    hcrc   uint32            4   CRC32C of kind+length: a forged or torn length is caught
    payload                  length bytes
    pcrc   uint32            4   CRC32C of the payload (format 3 data records: of binding + payload)

A record whose header is incomplete or fails its checksum ends the readable part of a file
(a writer killed mid-record, or a file still being written); a record whose header is good
but whose payload fails its checksum is skipped and reported. A length can never make the
reader allocate more than the file holds.

From format 3 a data record's checksum is seeded with its binding (`binding()`): the writer,
worker, segment, step, name id and offset it was written for. The reader checks it with the
binding its index entry gives, so a record read through any other entry (a segment copied over
another, a botched restore) fails its checksum instead of passing for another value. It costs no
bytes and one CRC of 44 bytes per record.

From format 4 a step's small arrays share "pack" data records: the index entry of each points at
its own bytes inside a pack, and the step's index record lists its packs ([offset, payload length]).
A pack's checksum is bound like a record's, with the name id PACK_NID: a pack read through another
step, segment or run fails its checksum the same way.
"""
from __future__ import annotations

import os
import struct
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Tuple, Union

import crc32c as _crc32c

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Buffer

    #: bytes-like objects that also have len() and slices
    Bytes = Union[bytes, bytearray, memoryview]

MAGIC = b"TTR1"
KIND_DATA = 1
KIND_INDEX = 2
KIND_PAD = 3  # zero bytes placed before a big data record so its payload lands well aligned
_HEADER = struct.Struct("<4sBQI")
HEADER_SIZE = _HEADER.size  # 17
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
_U32 = struct.Struct("<I")
_BINDING = struct.Struct("<16sIIQIQ")  # writer token, rank, segment, step, name id, record offset
PACK_NID = 0xFFFFFFFF  # the name id a pack record's binding uses (no tensor has it)


def crc(data: "Buffer", value: int = 0) -> int:
    """CRC32C (Castagnoli) of bytes-like `data`, from the maintained `crc32c` package;
    `value` continues a checksum computed over the bytes before `data`."""
    return _crc32c.crc32c(data, value) if value else _crc32c.crc32c(data)


def binding(token: bytes, rank: int, seg: int, step: int, nid: int, offset: int) -> int:
    """The checksum seed binding a data record to the one index entry it was written for."""
    return crc(_BINDING.pack(token, rank, seg, step, nid, offset))


PARALLEL_CRC = 4 << 20  # payloads this big are checksummed on a helper thread while I/O goes on

_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has no copy of the thread: it makes its own


os.register_at_fork(after_in_child=_forget_pool)


class Checksummer:
    """CRC32C of a stream of chunks, computed in order on one helper thread while the caller
    reads or writes the next chunk: the crc32c package releases the GIL, so a big payload's
    checksum costs (almost) no time next to its I/O on a machine with a spare core."""

    def __init__(self, seed: int = 0) -> None:
        global _pool
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(1, thread_name_prefix="tensortap-crc")
            self._pool = _pool
        self._value = seed
        self._last: Optional[Future[None]] = None

    def add(self, chunk: "Buffer") -> None:
        """Queue `chunk` (it must not change until value() returns)."""
        self._last = self._pool.submit(self._step, chunk)

    def _step(self, chunk: "Buffer") -> None:
        self._value = crc(chunk, self._value)

    def value(self) -> int:
        """The checksum of every chunk added so far, in order."""
        if self._last is not None:
            self._last.result()
        return self._value


def header(kind: int, length: int) -> bytes:
    """The 17 header bytes of a record of `kind` carrying `length` payload bytes."""
    kl = struct.pack("<BQ", kind, length)
    return _HEADER.pack(MAGIC, kind, length, crc(kl))


def trailer(payload_crc: int) -> bytes:
    return _U32.pack(payload_crc)


def encode(kind: int, payload: bytes) -> bytes:
    """One complete record as bytes (small records; big arrays are written in three parts)."""
    return header(kind, len(payload)) + payload + trailer(crc(payload))


def pad(nbytes: int) -> bytes:
    """A padding record exactly `nbytes` long (>= OVERHEAD): keeps "every byte of a file
    belongs to a record" true where the writer aligns the next payload."""
    if nbytes < OVERHEAD:
        raise ValueError(f"a padding record takes at least {OVERHEAD} bytes, asked for {nbytes}")
    return encode(KIND_PAD, bytes(nbytes - OVERHEAD))


def pad_before(offset: int, payload_address: int, align: int = 64) -> int:
    """Bytes of padding to write at file `offset` so the next record's payload starts at a file
    offset congruent to `payload_address` modulo `align` (0, or at least OVERHEAD).

    Why: the kernel's copy between user memory and the page cache runs at half speed when the
    destination sits a few bytes after the source modulo 4 KiB (4K aliasing). Matching the
    array's address modulo 64 on write lets the reader place its buffer at the file offset
    modulo 4 KiB, so both copies run at full speed."""
    need = (payload_address - offset - HEADER_SIZE) % align
    if need and need < OVERHEAD:
        need += align * -(-(OVERHEAD - need) // align)
    return need


class TornRecord(Exception):
    """The bytes at this offset are not (yet) a complete record: end of the readable data."""


class BadPayload(Exception):
    """Header intact, payload checksum wrong: this record is skipped, the next one is readable."""

    def __init__(self, offset: int, next_offset: int, kind: int = 0) -> None:
        super().__init__(f"record at byte {offset}: payload checksum mismatch")
        self.offset = offset
        self.next_offset = next_offset
        self.kind = kind  # as its (intact) header says


@dataclass(frozen=True)
class Record:
    offset: int
    kind: int
    payload: Union[bytes, memoryview]  # bytes, or a view of the buffer read (iter_records_verbose(copy=False))
    next_offset: int


def parse_header(buf: "Bytes", offset: int = 0, available: Optional[int] = None) -> Tuple[int, int]:
    """(kind, length) of the header at `offset` in `buf`; TornRecord if it is not a valid header
    or the record would end past `available` bytes."""
    avail = len(buf) if available is None else available
    if offset + HEADER_SIZE > avail:
        raise TornRecord(f"incomplete header at byte {offset}")
    magic, kind, length, hcrc = _HEADER.unpack_from(buf, offset)
    if magic != MAGIC or hcrc != crc(bytes(buf[offset + 4: offset + 13])):
        raise TornRecord(f"bad header at byte {offset}")
    if offset + OVERHEAD + length > avail:
        raise TornRecord(f"record at byte {offset} ends past the data present")
    return kind, length


def record_size(buf: "Bytes", offset: int = 0) -> Optional[int]:
    """The full size of the record whose header starts at `offset` (present even if its body is
    not), or None when no valid header is there."""
    if offset + HEADER_SIZE > len(buf):
        return None
    length: int
    magic, kind, length, hcrc = _HEADER.unpack_from(buf, offset)
    if magic != MAGIC or hcrc != crc(bytes(buf[offset + 4: offset + 13])):
        return None
    return OVERHEAD + length


def iter_records(buf: "Buffer", start: int = 0) -> Iterator[Record]:
    """Every valid record in `buf` from `start`, skipping bad payloads (raising nothing).
    Stops at the first torn header; the last yielded record's next_offset is where to resume."""
    for item in iter_records_verbose(buf, start):
        if isinstance(item, Record):
            yield item


def iter_records_verbose(buf: "Buffer", start: int = 0, copy: bool = True) -> Iterator[Union[Record, BadPayload]]:
    """Like iter_records but also yields BadPayload objects for skipped records (and for format-3
    data records, whose checksums only their index entry's binding verifies). With copy=False
    payloads are memoryviews of `buf` (no copy; `buf` must not change)."""
    view = memoryview(buf)
    off = start
    n = len(view)
    while off < n:
        try:
            kind, length = parse_header(view, off, n)
        except TornRecord:
            return
        body = view[off + HEADER_SIZE: off + HEADER_SIZE + length]
        (pcrc,) = _U32.unpack_from(view, off + HEADER_SIZE + length)
        nxt = off + OVERHEAD + length
        if crc(body) != pcrc:
            yield BadPayload(off, nxt, kind)
        else:
            yield Record(off, kind, bytes(body) if copy else body, nxt)
        off = nxt


def check_record(buf: "Buffer", kind: int, payload_crc: Optional[int] = None, seed: int = 0) -> memoryview:
    """Validate one complete record held in `buf` and return its payload (a view).
    `payload_crc`: the payload's CRC32C if the caller already computed it while reading
    (it must cover exactly the bytes this header says the payload has, from `seed`);
    `seed`: the record's binding (format 3 data records), 0 for none."""
    view = memoryview(buf)
    k, length = parse_header(view, 0, len(view))
    if k != kind:
        raise TornRecord(f"expected record kind {kind}, found {k}")
    if payload_crc is not None and HEADER_SIZE + length + TRAILER_SIZE != len(view):
        raise TornRecord("record length differs from the length read")  # the precomputed crc would not apply
    body = view[HEADER_SIZE: HEADER_SIZE + length]
    (pcrc,) = _U32.unpack_from(view, HEADER_SIZE + length)
    if (crc(body, seed) if payload_crc is None else payload_crc) != pcrc:
        raise BadPayload(0, HEADER_SIZE + length + TRAILER_SIZE)
    return body
