"""TensorBoard event files written by hand: TFRecord framing with real masked CRC32C, and the
few protobuf messages TensorBoard reads (Event, Summary, HistogramProto, Image), encoded here
so the core needs neither tensorflow nor protobuf.

Framing: uint64 length (LE), masked crc32c(length), data, masked crc32c(data);
mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32). The first event carries
file_version "brain.Event:2".
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Optional, Sequence, Union

import crc32c as _crc32c
import numpy as np


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C (Castagnoli) of `data`."""
    c = _crc32c.crc32c(data) & 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: length, its CRC, the data, its CRC."""
    n = struct.pack("<Q", len(data))
    return n + struct.pack("<I", masked_crc(n)) + data + struct.pack("<I", masked_crc(data))


# ---- protobuf wire format (only what these messages need) -------------------------------------

def _varint(v: int) -> bytes:
    v = int(v)
    if v < 0:
        v += 1 << 64  # int64 two's complement, 10 bytes
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def f_varint(field: int, v: int) -> bytes:
    return _key(field, 0) + _varint(v)


def f_double(field: int, v: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", float(v))


def f_float(field: int, v: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", float(v))


def f_bytes(field: int, b: bytes) -> bytes:
    return _key(field, 2) + _varint(len(b)) + b


def f_str(field: int, s: str) -> bytes:
    return f_bytes(field, s.encode("utf-8"))


def f_packed_doubles(field: int, vals: Union[Sequence[float], np.ndarray]) -> bytes:
    return f_bytes(field, np.asarray(vals, dtype="<f8").tobytes())


def event(step: int, wall_time: float, summary: Optional[bytes] = None, file_version: Optional[str] = None) -> bytes:
    """Event{wall_time=1, step=2, file_version=3, summary=5}."""
    out = f_double(1, wall_time) + f_varint(2, int(step))
    if file_version is not None:
        out += f_str(3, file_version)
    if summary is not None:
        out += f_bytes(5, summary)
    return out


def summary(*values: bytes) -> bytes:
    """Summary{repeated Value value = 1}."""
    return b"".join(f_bytes(1, v) for v in values)


def scalar_value(tag: str, v: float) -> bytes:
    """Summary.Value{tag=1, simple_value=2}."""
    return f_str(1, tag) + f_float(2, v)


def histogram_value(tag: str, counts: np.ndarray, edges: np.ndarray, stats: Optional[Sequence[float]] = None) -> bytes:
    """Summary.Value{tag=1, histo=5: HistogramProto{min, max, num, sum, sum_squares, bucket_limit, bucket}}.

    bucket_limit[i] is the right edge of bucket i. `stats` = (min, max, num, sum, sum_squares) when the
    full values are known; otherwise estimated from bucket centres."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if stats is None:
        centres = (edges[:-1] + edges[1:]) / 2
        nz = np.nonzero(counts)[0]
        lo = float(edges[nz[0]]) if nz.size else float(edges[0])
        hi = float(edges[nz[-1] + 1]) if nz.size else float(edges[-1])
        stats = (lo, hi, float(counts.sum()), float((counts * centres).sum()), float((counts * centres ** 2).sum()))
    mn, mx, num, sm, sq = (float(x) for x in stats)
    h = (f_double(1, mn) + f_double(2, mx) + f_double(3, num) + f_double(4, sm) + f_double(5, sq)
         + f_packed_doubles(6, edges[1:]) + f_packed_doubles(7, counts))
    return f_str(1, tag) + f_bytes(5, h)


def image_value(tag: str, png: bytes, height: int, width: int, channels: int = 3) -> bytes:
    """Summary.Value{tag=1, image=4: Image{height=1, width=2, colorspace=3, encoded_image_string=4}}."""
    img = f_varint(1, height) + f_varint(2, width) + f_varint(3, channels) + f_bytes(4, png)
    return f_str(1, tag) + f_bytes(4, img)


class EventWriter:
    """Appends events to one `events.out.tfevents.*` file in `logdir` (created)."""

    def __init__(self, logdir: str, suffix: str = "tensortap") -> None:
        os.makedirs(logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{suffix}"
        self.path = os.path.join(logdir, name)
        self._f = open(self.path, "wb")
        self._f.write(frame(event(0, time.time(), file_version="brain.Event:2")))
        self.count = 0

    def add(self, step: int, values: Sequence[bytes], wall_time: Optional[float] = None) -> None:
        """One event at `step` carrying Summary.Value messages built by *_value()."""
        self._f.write(frame(event(step, wall_time if wall_time is not None else time.time(), summary(*values))))
        self.count += 1

    def add_scalar(self, tag: str, value: float, step: int, wall_time: Optional[float] = None) -> None:
        self.add(step, [scalar_value(tag, value)], wall_time)

    def flush(self) -> None:
        """Make what was added visible to readers (TensorBoard reads a file as it grows)."""
        if not self._f.closed:
            self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
