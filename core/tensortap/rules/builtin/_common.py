"""Helpers the built-in rules share: parameter coercion, reading values, message formatting."""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from ...errors import ConfigError
from ...modes import to_mode
from ..base import RuleResult, as_list

__all__ = ["activations", "parameter_gradients", "as_list", "as_bool", "as_float_pair", "value", "listing", "result", "mode_of", "is_numeric", "ConfigError"]


def as_bool(v) -> bool:
    """True/False from a bool or the strings the CLI passes ("true", "False", "1", "0")."""
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("true", "1", "yes", "on"):
            return True
        if t in ("false", "0", "no", "off", "none", ""):
            return False
        raise ConfigError(f"expected true or false, got {v!r}")
    return bool(v)


def as_float_pair(v, what: str) -> Tuple[float, float]:
    vals = [float(x) for x in (as_list(v) if isinstance(v, str) else v)]
    if len(vals) != 2 or vals[0] >= vals[1]:
        raise ConfigError(f"{what} must be two numbers (low, high) with low < high, got {v!r}")
    return vals[0], vals[1]


def value(trial, name: str, step: int) -> np.ndarray:
    return trial.tensor(name).value(step)


def is_numeric(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "biufc"


def mode_of(trial, step: int) -> Optional[str]:
    m = trial.mode(step)
    return m.value if m is not None else None


def listing(values: Dict[str, float], limit: int = 5, fmt: str = "{:.3g}") -> str:
    """"a=1.2e-09, b=3e-08 (+3 more)" for messages."""
    items = list(values.items())
    text = ", ".join(f"{k}={fmt.format(v) if isinstance(v, (int, float, np.floating)) else v}" for k, v in items[:limit])
    return text + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def result(rule, step: int, fired: bool, message: str, values: Optional[dict] = None) -> RuleResult:
    return RuleResult(rule.name, step, bool(fired), message, dict(values or {}))


def check_mode(mode) -> Optional[str]:
    m = to_mode(mode)
    return m.value if m is not None else None


def percent(x: float) -> str:
    return f"{x:.1f}%"


def nonempty(names: Iterable[str]) -> List[str]:
    return [n for n in names if n]


def activations(names: Iterable[str]) -> List[str]:
    """Drop gradients of layer outputs (gradients/<layer>/output_i): a regex written for layer
    activations (".*relu.*/output_\\d+") matches them too, but they are not activations."""
    return [n for n in names if not n.startswith("gradients/")]


_LAYER_TENSOR = re.compile(r"/(?:output|input)_\d+$")


def parameter_gradients(names: Iterable[str]) -> List[str]:
    """Gradients of parameters only: drop gradients of layer outputs/inputs
    (gradients/<layer>/output_i), which the "gradients" collection also holds when layer
    tensors are captured, and whose scale (1/batch) says nothing about vanishing."""
    return [n for n in names if not _LAYER_TENSOR.search(n)]
