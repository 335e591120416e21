"""Index records: a JSON header and, for a step, a packed table of where each tensor lives.

payload = uint32 json_length | json header | entries (ENTRY_DTYPE rows, sorted by nid)

Header types:
  {"type": "defs", "names": [[nid, name, kind, [collections]]], "dtypes": [[id, "<f4"]],
   "shapes": [[id, [2, 3]]]}                        new ids, before the first step using them
  {"type": "step", "step": g, "mode": "train", "mode_step": k, "time": t, "packs": [[offset, length]]}
                                                   "packs" (format 4, when the step has small arrays):
                                                   its pack data records; an entry whose offset lies
                                                   inside one is an array inside that pack
  {"type": "rule", ...}                            one rule evaluation result (older live rules)
  {"type": "rules", "time": t, "fields": [...], "results": [[...], ...]}
                                                   the results of several rules at once (live rules);
                                                   Trial.rule_results() reads both forms alike
  {"type": "event", ...}                           a notice (dropped steps, write errors)
  {"type": "end", "time": t}                       the writer closed cleanly
Tensor names live only here, as data: no name ever becomes a path.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .safe_io import depth_ok

ENTRY_DTYPE = np.dtype(
    [("nid", "<u4"), ("dtype", "<u2"), ("shape", "<u4"), ("offset", "<u8"), ("nbytes", "<u8")]
)
_U32 = struct.Struct("<I")
_FLAT = ("defs", "step", "segment")  # checked field by field by the reader
# dtype kinds a run may hold: bool, ints, floats, complex, fixed-width strings. Never objects.
SAFE_KINDS = set("biufcSU")
# Machine-learning float types numpy lacks (the `ml_dtypes` package: what JAX/TF/torch bf16 map to),
# stored by name with their width; a reader without ml_dtypes returns their raw bits as uints.
ML_DTYPES = {"bfloat16": 2, "float8_e4m3fn": 1, "float8_e4m3b11fnuz": 1, "float8_e4m3fnuz": 1,
             "float8_e5m2": 1, "float8_e5m2fnuz": 1}


def is_storable(dt: np.dtype[Any]) -> bool:
    """Can arrays of this dtype be written to a run?"""
    return (dt.kind in SAFE_KINDS and not dt.hasobject) or (dt.kind == "V" and dt.name in ML_DTYPES
                                                             and dt.names is None)


def dtype_code(dt: np.dtype[Any]) -> str:
    """What the index stores for a dtype: numpy's '<f4' form, or the ml_dtypes name ('bfloat16')."""
    code: str = dt.name if dt.kind == "V" and dt.name in ML_DTYPES else dt.str
    return code


def encode(header: Dict[str, Any], entries: Optional[np.ndarray[Any, Any]] = None) -> bytes:
    js = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    tail = b"" if entries is None else np.ascontiguousarray(entries, ENTRY_DTYPE).tobytes()
    return _U32.pack(len(js)) + js + tail


class BadIndex(ValueError):
    """An index payload that passed its checksum but does not decode (wrong version, forged)."""


def decode(payload: Union[bytes, memoryview]) -> Tuple[Dict[str, Any], Optional[np.ndarray[Any, Any]]]:
    if len(payload) < 4:
        raise BadIndex("index payload shorter than its length field")
    (jlen,) = _U32.unpack_from(payload, 0)
    if 4 + jlen > len(payload):
        raise BadIndex("index JSON length runs past the payload")
    try:
        header = json.loads(bytes(payload[4: 4 + jlen]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadIndex(f"index JSON does not parse: {e}") from None
    except RecursionError:
        raise BadIndex("index JSON is nested too deeply") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise BadIndex("index header is not an object with a 'type'")
    if header["type"] not in _FLAT and not depth_ok(header):  # rule results and events reach users as they are
        raise BadIndex("index JSON is nested too deeply")
    rest = payload[4 + jlen:]
    if not rest:
        return header, None
    if len(rest) % ENTRY_DTYPE.itemsize:
        raise BadIndex("index entry table has a partial row")
    return header, np.frombuffer(rest, ENTRY_DTYPE)


def safe_dtype(text: str) -> np.dtype[Any]:
    """np.dtype from its stored string, refusing anything that could hold Python objects."""
    if not isinstance(text, str) or len(text) > 24:
        raise BadIndex(f"bad dtype field {text!r}")
    if text in ML_DTYPES:
        try:
            import ml_dtypes

            dt: np.dtype[Any] = np.dtype(getattr(ml_dtypes, text))
            return dt
        except (ImportError, AttributeError):
            return np.dtype(f"<u{ML_DTYPES[text]}")  # the raw bits; `pip install ml_dtypes` to get floats
    try:
        dt = np.dtype(text)
    except Exception:  # noqa: BLE001 - TypeError/ValueError/SyntaxError for junk strings
        raise BadIndex(f"unknown dtype {text!r}") from None
    if dt.kind not in SAFE_KINDS or dt.hasobject:
        raise BadIndex(f"dtype {text!r} is not allowed in a run (only bool/int/float/complex/str)")
    return dt
