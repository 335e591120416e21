"""Helpers the built-in rules share: parameter coercion, reading values, message formatting."""
from __future__ import annotations

import math
import re
import threading
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...errors import ConfigError
from ...modes import to_mode
from ..base import RuleResult, as_list
from ..cache import CachedTrial

__all__ = ["activations", "parameter_gradients", "as_list", "as_bool", "as_float_pair", "value", "listing", "result",
           "no_match", "mode_of", "is_numeric", "ConfigError", "sample", "all_finite", "surely_not_close",
           "any_nonzero", "mean_abs", "l2", "l2_diff", "norm_of", "mean_abs_of", "finite_of"]

#: arrays bigger than this get a cheap look at a spread-out sample of SAMPLE values first
SAMPLE = 256


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
    vals = [float(x) for x in ((as_list(v) or []) if isinstance(v, str) else v)]
    if len(vals) != 2 or vals[0] >= vals[1]:
        raise ConfigError(f"{what} must be two numbers (low, high) with low < high, got {v!r}")
    return vals[0], vals[1]


def value(trial, name: str, step: int) -> np.ndarray:
    if isinstance(trial, CachedTrial):  # live evaluation and invoke_rule: straight from its cache
        return trial.value(name, step)
    return trial.tensor(name).value(step)


def is_numeric(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "biufc"


def mode_of(trial, step: int) -> Optional[str]:
    m = trial.mode(step)
    return m.value if m is not None else None


def listing(values: Mapping[str, Any], limit: int = 5, fmt: str = "{:.3g}") -> str:
    """"a=1.2e-09, b=3e-08 (+3 more)" for messages."""
    items = list(values.items())
    text = ", ".join(f"{k}={fmt.format(v) if isinstance(v, (int, float, np.floating)) else v}"
                     for k, v in items[:limit])
    return text + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def result(rule, step: int, fired: bool, message: str, values: Optional[dict] = None,
           checked: Optional[int] = None) -> RuleResult:
    """A fired or quiet result; `checked` None lets Rule.invoke count the tensors read."""
    return RuleResult(rule.name, step, bool(fired), message, dict(values or {}), checked=checked)


def no_match(regex) -> str:
    """The skip reason of a rule whose tensor_regex matched nothing saved at the step."""
    return f"no tensor saved at this step matches tensor_regex {regex}"


def check_mode(mode) -> Optional[str]:
    m = to_mode(mode)
    return m.value if m is not None else None


def percent(x: float) -> str:
    return f"{x:.1f}%"


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


def sample(x: np.ndarray, n: int = SAMPLE) -> np.ndarray:
    """About `n` values spread evenly over the whole array (a view; the array itself if small)."""
    flat = x.reshape(-1)
    return flat if flat.size <= 2 * n else flat[::flat.size // n]


def all_finite(v: np.ndarray) -> bool:
    """No NaN and no +/-Inf in `v`. For float32/float64 one BLAS pass: the sum of squares is
    finite only if every value is (squares cannot cancel); when it is not (or for other types)
    the exact test decides, so values whose squares overflow are still reported finite."""
    if v.dtype.kind not in "fc":
        return True
    if v.dtype in (np.float32, np.float64) and v.size:
        x = v.reshape(-1)
        if math.isfinite(float(np.dot(x, x))):  # overflowing squares: the exact test decides
            return True
    return bool(np.isfinite(v).all())


def surely_not_close(pairs: Sequence[Tuple[np.ndarray, np.ndarray]], rtol: float, atol: float) -> List[bool]:
    """For each (a, b): True when a spread-out sample already holds an element beyond
    np.allclose's tolerance (|a - b| > atol + rtol * |b|, with a margin for rounding), so a and
    b are not allclose whatever the rest holds; False means "look at everything" (also for
    pairs of other shapes or types). All pairs are sampled and compared in one vectorised pass."""
    keep = [i for i, (a, b) in enumerate(pairs)
            if a.shape == b.shape and a.size and a.dtype.kind == "f" and b.dtype.kind == "f"]
    out = [False] * len(pairs)
    if not keep:
        return out
    sa = [sample(pairs[i][0]) for i in keep]
    sb = np.concatenate([sample(pairs[i][1]) for i in keep])
    starts = np.cumsum([0] + [len(x) for x in sa[:-1]])
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf differences: left to the exact test
        beyond = np.abs(np.concatenate(sa) - sb) > np.abs(sb) * (rtol * 1.001) + atol * 1.001
    for i, flag in zip(keep, np.logical_or.reduceat(beyond, starts).tolist()):
        out[i] = flag
    return out


def any_nonzero(v: np.ndarray) -> bool:
    """v.any(), looking at a spread-out sample first (a tensor in training is rarely zero)."""
    return bool(sample(v).any()) or bool(v.any())


_scratch = threading.local()
#: arrays up to this many bytes are worked on in a reused scratch buffer
SCRATCH_BYTES = 16 << 20


def scratch_like(x: np.ndarray) -> np.ndarray:
    """An uninitialised array of x's shape and dtype, reused from call to call (per thread) when
    small enough: a fresh temporary of a few MB costs more to fault in than to compute."""
    if x.nbytes > SCRATCH_BYTES or x.dtype.hasobject:
        return np.empty_like(x)
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < x.nbytes:
        buf = _scratch.buf = np.empty(max(x.nbytes, 1 << 16), np.uint8)
    return buf[:x.nbytes].view(x.dtype).reshape(x.shape)


def mean_abs(x: np.ndarray) -> float:
    """mean(|x|) as a float (0.0 for an empty array), without a fresh temporary."""
    if not x.size:
        return 0.0
    if x.dtype.kind not in "fiu":
        return float(np.mean(np.abs(x)))
    return float(np.add.reduce(np.abs(x, out=scratch_like(x)), axis=None)) / x.size


def l2(x: np.ndarray) -> float:
    """L2 norm (numpy's: sqrt of a BLAS dot); float32 stays float32, integers go through float64."""
    x = np.asarray(x)
    return float(np.linalg.norm(x.ravel() if x.dtype.kind in "fc" else x.ravel().astype(np.float64)))


def l2_diff(a: np.ndarray, b: np.ndarray) -> float:
    """l2(a - b), the difference made in a reused scratch buffer."""
    if a.shape != b.shape or a.dtype != b.dtype or a.dtype.kind not in "fc":
        return l2(a - b)
    return l2(np.subtract(a, b, out=scratch_like(a)))


# ---- statistics of a stored value, computed once per (tensor, step) when the trial caches ------
# Live evaluation and invoke_rule read through a CachedTrial: there, what one rule computed over a
# tensor (vanishing_gradient's mean |g|, the norm exploding_tensor checks) serves the others
# (exploding_tensor's finiteness test, weight_update_ratio's |w_prev|) instead of another pass.

def _stat(trial, name: str, step: int, kind: str, fn, v: Optional[np.ndarray] = None) -> float:
    if not isinstance(trial, CachedTrial):
        return fn(value(trial, name, step) if v is None else v)
    got = trial.stat(name, step, kind)
    if got is None:
        got = fn(value(trial, name, step) if v is None else v)
        trial.keep_stat(name, step, kind, got)
    return got


def norm_of(trial, name: str, step: int, v: Optional[np.ndarray] = None) -> float:
    """l2 of `name` at `step` (`v`: its value, when the caller has it)."""
    return _stat(trial, name, step, "l2", l2, v)


def mean_abs_of(trial, name: str, step: int) -> float:
    """mean |x| of `name` at `step`."""
    return _stat(trial, name, step, "mean_abs", mean_abs)


def finite_of(trial, name: str, step: int) -> bool:
    """No NaN/Inf in `name` at `step` (all_finite), told by a sum over the values when there is
    one (a sum of squares or of |x| is finite only if every value is); exact when it is not."""
    v = value(trial, name, step)
    if not isinstance(trial, CachedTrial) or v.dtype not in (np.float32, np.float64) or not v.size:
        return all_finite(v)
    got = trial.stat(name, step, "mean_abs")
    if got is None:
        got = norm_of(trial, name, step)
    return math.isfinite(got) or bool(np.isfinite(v).all())
