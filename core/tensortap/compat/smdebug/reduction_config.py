"""smdebug's ReductionConfig, turned into tensortap's.

smdebug splits reductions into `reductions` (min, max, mean, std, variance, sum, prod),
`abs_reductions` (the same of |x|), `norms` and `abs_norms` (l1, l2); its JSON form is one
comma-separated string ("min,abs_max,l2_norm,abs_l1_norm"). tensortap stores min, max, mean, std,
variance, sum, l1, l2, abs_min, abs_max, abs_mean; what has no tensortap counterpart (prod, and
std/variance/sum of |x|) is refused with a clear error. |x| norms equal the norms.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, overload

from ...errors import ConfigError
from ...reductions import ReductionConfig as _TTReductionConfig

ALLOWED_REDUCTIONS = ("min", "max", "mean", "std", "variance", "sum", "prod")
ALLOWED_NORMS = ("l1", "l2")
_ABS_IN_TENSORTAP = {"min": "abs_min", "max": "abs_max", "mean": "abs_mean"}


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _names(kind: str, values: Optional[Sequence[str]], allowed: Sequence[str]) -> List[str]:
    out = list(values or [])
    for v in out:
        if v not in allowed:
            raise ConfigError(f"ReductionConfig {kind}: {v!r} is not one of {', '.join(allowed)}")
    return out


class ReductionConfig:
    """`ReductionConfig(reductions=None, abs_reductions=None, norms=None, abs_norms=None,
    save_raw_tensor=False, save_shape=False)`, as in smdebug."""

    def __init__(self, reductions: Optional[Sequence[str]] = None, abs_reductions: Optional[Sequence[str]] = None,
                 norms: Optional[Sequence[str]] = None, abs_norms: Optional[Sequence[str]] = None,
                 save_raw_tensor: bool = False, save_shape: bool = False) -> None:
        self.reductions = _names("reductions", reductions, ALLOWED_REDUCTIONS)
        self.abs_reductions = _names("abs_reductions", abs_reductions, ALLOWED_REDUCTIONS)
        self.norms = _names("norms", norms, ALLOWED_NORMS)
        self.abs_norms = _names("abs_norms", abs_norms, ALLOWED_NORMS)
        self.save_raw_tensor = _bool("save_raw_tensor", save_raw_tensor)
        self.save_shape = _bool("save_shape", save_shape)  # tensortap always records shapes
        self.to_tensortap()  # refuse what has no counterpart now, not at the first saved step

    def to_tensortap(self) -> _TTReductionConfig:
        names: List[str] = []
        for r in self.reductions:
            if r == "prod":
                raise ConfigError("reduction 'prod' has no counterpart in tensortap (products of many values "
                                  "overflow); use 'sum', 'mean' or 'l2'")
            names.append(r)
        for r in self.abs_reductions:
            if r not in _ABS_IN_TENSORTAP:
                raise ConfigError(f"reduction abs_{r} has no counterpart in tensortap; its |x| reductions are "
                                  "abs_min, abs_max, abs_mean (and l1/l2, which equal their |x| forms)")
            names.append(_ABS_IN_TENSORTAP[r])
        names += list(self.norms) + list(self.abs_norms)
        return _TTReductionConfig(reductions=tuple(dict.fromkeys(names)), save_raw_tensor=self.save_raw_tensor)

    @overload
    @classmethod
    def from_dict(cls, params: Dict[str, Any]) -> "ReductionConfig": ...
    @overload
    @classmethod
    def from_dict(cls, params: None) -> None: ...

    @classmethod
    def from_dict(cls, params: Optional[Dict[str, Any]]) -> Optional["ReductionConfig"]:
        """smdebug's flat form: {"reductions": "min,abs_max,l2_norm", "save_raw_tensor": ...}."""
        if params is None:
            return None
        lists: Dict[tuple, List[str]] = {(False, False): [], (False, True): [], (True, False): [], (True, True): []}
        raw = params.get("reductions", "")
        for red in (x.strip() for x in (raw.split(",") if isinstance(raw, str) else list(raw))):
            if not red:
                continue
            is_abs = red.startswith("abs_")
            base = red[4:] if is_abs else red
            is_norm = base.endswith("_norm") or base in ALLOWED_NORMS
            lists[(is_abs, is_norm)].append(base[:-5] if base.endswith("_norm") else base)
        reductions, norms = lists[(False, False)], lists[(False, True)]
        abs_reductions, abs_norms = lists[(True, False)], lists[(True, True)]
        return cls(reductions, abs_reductions, norms, abs_norms, params.get("save_raw_tensor", False),
                   params.get("save_shape", False))

    def to_json_dict(self) -> Dict[str, Any]:
        names = (list(self.reductions) + [f"{n}_norm" for n in self.norms] + [f"abs_{r}" for r in self.abs_reductions]
                 + [f"abs_{n}_norm" for n in self.abs_norms])
        return {"save_raw_tensor": self.save_raw_tensor, "reductions": ",".join(names), "save_shape": self.save_shape}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReductionConfig) and self.to_json_dict() == other.to_json_dict()

    def __repr__(self) -> str:
        return (f"<class ReductionConfig: reductions={self.reductions}, abs_reductions={self.abs_reductions}, "
                f"norms={self.norms}, abs_norms={self.abs_norms}, save_raw_tensor={self.save_raw_tensor}>")


def to_tensortap(rc: Any) -> Optional[_TTReductionConfig]:
    """A compat or tensortap ReductionConfig (or None) as tensortap's."""
    if rc is None or isinstance(rc, _TTReductionConfig):
        return rc
    if isinstance(rc, ReductionConfig):
        return rc.to_tensortap()
    raise ConfigError(f"reduction_config must be a ReductionConfig, got {type(rc).__name__}")
