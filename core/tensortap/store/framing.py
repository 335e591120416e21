"""Record framing: every byte in a run file belongs to a checksummed record.

Layout of one record (little-endian):

    magic  b"TTR1"           4 bytes
    kind   uint8             1   (KIND_DATA, KIND_INDEX)
    length uint64            8   payload length
    hcrc   uint32            4   CRC32C of kind+length: a forged or torn length is caught
    payload                  length bytes
    pcrc   uint32            4   CRC32C of the payload

A record whose header is incomplete or fails its checksum ends the readable part of a file
(a writer killed mid-record, or a file still being written); a record whose header is good
but whose payload fails its checksum is skipped and reported. A length can never make the
reader allocate more than the file holds.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, Optional

import crc32c as _crc32c

MAGIC = b"TTR1"
KIND_DATA = 1
KIND_INDEX = 2
_HEADER = struct.Struct("<4sBQI")
HEADER_SIZE = _HEADER.size  # 17
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
_U32 = struct.Struct("<I")


def crc(data, value: int = 0) -> int:
    """CRC32C (Castagnoli) of bytes-like `data`, from the maintained `crc32c` package;
    `value` continues a checksum computed over the bytes before `data`."""
    return _crc32c.crc32c(data, value) if value else _crc32c.crc32c(data)


def header(kind: int, length: int) -> bytes:
    """The 17 header bytes of a record of `kind` carrying `length` payload bytes."""
    kl = struct.pack("<BQ", kind, length)
    return _HEADER.pack(MAGIC, kind, length, crc(kl))


def trailer(payload_crc: int) -> bytes:
    return _U32.pack(payload_crc)


def encode(kind: int, payload: bytes) -> bytes:
    """One complete record as bytes (small records; big arrays are written in three parts)."""
    return header(kind, len(payload)) + payload + trailer(crc(payload))


class TornRecord(Exception):
    """The bytes at this offset are not (yet) a complete record: end of the readable data."""


class BadPayload(Exception):
    """Header intact, payload checksum wrong: this record is skipped, the next one is readable."""

    def __init__(self, offset: int, next_offset: int) -> None:
        super().__init__(f"record at byte {offset}: payload checksum mismatch")
        self.offset = offset
        self.next_offset = next_offset


@dataclass(frozen=True)
class Record:
    offset: int
    kind: int
    payload: bytes
    next_offset: int


def parse_header(buf, offset: int = 0, available: Optional[int] = None):
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


def iter_records(buf, start: int = 0) -> Iterator[Record]:
    """Every valid record in `buf` from `start`, skipping bad payloads (raising nothing).
    Stops at the first torn header; the last yielded record's next_offset is where to resume."""
    for item in iter_records_verbose(buf, start):
        if isinstance(item, Record):
            yield item


def iter_records_verbose(buf, start: int = 0, copy: bool = True):
    """Like iter_records but also yields BadPayload objects for skipped records. With
    copy=False payloads are memoryviews of `buf` (no copy; `buf` must not change)."""
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
            yield BadPayload(off, nxt)
        else:
            yield Record(off, kind, bytes(body) if copy else body, nxt)
        off = nxt


def check_record(buf, kind: int, payload_crc: Optional[int] = None) -> memoryview:
    """Validate one complete record held in `buf` and return its payload (a view).
    `payload_crc`: the payload's CRC32C if the caller already computed it while reading
    (it must cover exactly the bytes this header says the payload has)."""
    view = memoryview(buf)
    k, length = parse_header(view, 0, len(view))
    if k != kind:
        raise TornRecord(f"expected record kind {kind}, found {k}")
    if payload_crc is not None and HEADER_SIZE + length + TRAILER_SIZE != len(view):
        raise TornRecord("record length differs from the length read")  # the precomputed crc would not apply
    body = view[HEADER_SIZE: HEADER_SIZE + length]
    (pcrc,) = _U32.unpack_from(view, HEADER_SIZE + length)
    if (crc(body) if payload_crc is None else payload_crc) != pcrc:
        raise BadPayload(0, HEADER_SIZE + length + TRAILER_SIZE)
    return body
