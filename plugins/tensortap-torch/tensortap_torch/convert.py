"""Torch tensors to numpy copies, and reductions computed with torch ops on the tensor's device.

`reduce_torch` agrees with `tensortap.reductions.reduce_numpy(to_numpy(t))`: exactly for float64
(and integer) tensors; for float32 (and the halves, widened to float32) the sums accumulate in
float32 with torch's cascade summation, within ~1e-6 relative (min/max/counts exact); histogram bins
use the very edges numpy would use (linspace in the data's float dtype), so every element lands in
the same bin.
"""
from __future__ import annotations

import math
import sys
import threading
from operator import methodcaller
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import torch

from tensortap.reductions import canonical, unpack

#: dtypes numpy has no equivalent for: stored as float32 (exact for every value they hold).
_WIDEN = {torch.bfloat16} | {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                                         "float8_e5m2fnuz") if hasattr(torch, n)}


#: dtypes whose tensors reduce and copy as they are (the fast paths)
_PLAIN_FLOATS = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def as_is(t: torch.Tensor) -> bool:
    """Can `t` be copied or reduced as it is (dense float32/float64, no lazy negation)? The fast paths."""
    return t.dtype in _PLAIN_FLOATS and t.layout == torch.strided and not t.is_neg()


def plain(t: torch.Tensor) -> torch.Tensor:
    """A detached, dense, strided tensor with a dtype numpy knows (bfloat16/float8 -> float32)."""
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.dtype in _WIDEN:
        t = t.float()
    return t


def to_numpy(value: Any) -> np.ndarray:
    """A C-contiguous numpy copy of `value` that no later in-place update can change."""
    if not isinstance(value, torch.Tensor):
        return np.array(value, copy=True)
    t = plain(value)
    if t.device.type != "cpu":
        a = t.cpu().numpy()  # .cpu() already made a fresh host copy
        # (not np.ascontiguousarray unconditionally: it turns a 0-dim loss into shape (1,))
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)
    return np.array(t.numpy(), copy=True, order="C")  # CPU .numpy() shares memory: copy


class CopyPool:
    """`to_numpy` for the Hook's raw captures, reusing big host arrays the writer has finished with
    (a fresh multi-MB allocation costs page faults on every saved step: ~2.5x a warm copy).

    An array is reused only when nothing but the pool refers to it any more (the writer and
    whatever else held it dropped it: its reference count says so), so no stored value changes.
    Small arrays, non-CPU tensors and exotic dtypes take the plain path."""

    MIN_BYTES = 256 * 1024
    PER_KEY = 6  # arrays in flight per shape: this step's, the queued steps', the one the writer last held
    MAX_BYTES = 256 * 1024 * 1024

    def __init__(self) -> None:
        self._free: Dict[tuple, List[np.ndarray]] = {}
        self._bytes = 0

    def to_numpy(self, value: Any) -> np.ndarray:
        if (not isinstance(value, torch.Tensor) or not as_is(value) or value.device.type != "cpu"
                or value.nbytes < self.MIN_BYTES):
            return to_numpy(value)
        src = value.detach().numpy()
        key = (src.shape, src.dtype)
        arrays = self._free.get(key)
        if arrays is None:
            arrays = self._free[key] = []
        for a in arrays:
            if sys.getrefcount(a) <= 3:  # the list, `a`, getrefcount's argument: nobody else
                np.copyto(a, src)
                return a
        a = np.array(src, copy=True, order="C")
        if len(arrays) < self.PER_KEY and self._bytes + a.nbytes <= self.MAX_BYTES:
            arrays.append(a)
            self._bytes += a.nbytes
        return a


def _bin_dtype(t: torch.Tensor) -> np.dtype:
    """The dtype numpy's histogram computes its edges in for the array to_numpy(t) gives."""
    if t.dtype == torch.float16:
        return np.dtype(np.float16)
    if t.dtype == torch.float32 or t.dtype in _WIDEN:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _work_tensor(t: torch.Tensor) -> torch.Tensor:
    """The flat tensor reductions run on: float32/float64 kept, halves widened to float32, complex as
    |z| and integers/bools as float64 (what reduce_numpy does)."""
    if t.is_complex():
        return t.abs().double().reshape(-1)
    if not t.is_floating_point():
        return t.double().reshape(-1)
    if t.dtype not in (torch.float32, torch.float64):
        return t.float().reshape(-1)
    return t.reshape(-1)


def _histogram(f: torch.Tensor, bins: int, edge_dtype: np.dtype) -> np.ndarray:
    """Counts then edges (reductions.histogram's layout) with the very edges numpy would use."""
    finite = f[torch.isfinite(f)] if f.is_floating_point() else f
    if finite.numel() == 0:
        return np.concatenate([np.zeros(bins), np.linspace(0.0, 1.0, bins + 1)])
    lo, hi = torch.aminmax(finite)
    counts, edges = _counts(finite, float(lo), float(hi), bins, edge_dtype)
    return np.concatenate([counts.double().cpu().numpy(), edges])


def _counts(finite: torch.Tensor, lo: float, hi: float, bins: int, edge_dtype: np.dtype):
    """(bin counts as a device tensor, float64 numpy edges) of finite values in [lo, hi]."""
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1, dtype=edge_dtype)
    # the same edges in the data's own dtype (exact): every comparison is the one numpy makes
    e = torch.from_numpy(edges.astype(np.float64)).to(device=finite.device, dtype=finite.dtype)
    idx = (torch.bucketize(finite, e, right=True) - 1).clamp_(0, bins - 1)
    return torch.bincount(idx, minlength=bins)[:bins], edges.astype(np.float64)


_HEAVY = {  # reduction -> the full passes over the data it needs (each computed once)
    "min": ("minmax",), "max": ("minmax",), "mean": ("sums",), "sum": ("sums",), "std": ("sums", "sumsq"),
    "variance": ("sums", "sumsq"), "l2": ("sumsq",), "l1": ("l1",), "abs_mean": ("l1",),
    "abs_min": ("absminmax",), "abs_max": ("absminmax",), "nan_count": ("nan",), "inf_count": ("inf",),
    "zero_count": ("nonzero",), "histogram": ("minmax",),
}


#: pass -> what it computes, as (key, reduction, operand): the reduction ("min", "max", "sum")
#: of the values "x", their squares "sq", magnitudes "abs" or a 0/1 flag ("isnan", "isinf",
#: "nonzero"). Every batched path (`_scalar_passes`, `_small_passes`, `_segment_passes`) reads it;
#: `_pass_tensors` computes the same keys with torch's fused per-tensor ops.
_PASSES = {
    "minmax": (("min", "min", "x"), ("max", "max", "x")),
    "absminmax": (("abs_min", "min", "abs"), ("abs_max", "max", "abs")),
    "sums": (("sum", "sum", "x"),),
    "sumsq": (("sumsq", "sum", "sq"),),
    "l1": (("l1", "sum", "abs"),),
    "nan": (("nan", "sum", "isnan"),),
    "inf": (("inf", "sum", "isinf"),),
    "nonzero": (("nonzero", "sum", "nonzero"),),
}


def _pass_tensors(f: torch.Tensor, needed) -> Dict[str, torch.Tensor]:
    """The full passes over `f` as 0-dim device tensors (no host transfer yet). Sums run in the
    work tensor's dtype: float64 as numpy's; float32 with torch's cascade summation (within ~1e-7
    of float64 even at 10M values), a third less work than widening to float64 first (see
    `_finish` for the variance)."""
    parts: Dict[str, torch.Tensor] = {}
    for p in needed:
        if p == "minmax":
            parts["min"], parts["max"] = torch.aminmax(f)
        elif p == "absminmax":
            parts["abs_min"], parts["abs_max"] = torch.aminmax(f.abs())
        elif p == "sums":
            parts["sum"] = f.sum()
        elif p == "sumsq":
            # float32: a cascade sum of the squares (BLAS sdot accumulates linearly: 3e-4 off at 10M values)
            parts["sumsq"] = torch.dot(f, f) if f.dtype == torch.float64 else _sum_squares(f)
        elif p == "l1":
            parts["l1"] = f.abs().sum()
        elif p == "nan":
            parts["nan"] = torch.isnan(f).sum()
        elif p == "inf":
            parts["inf"] = torch.isinf(f).sum()
        elif p == "nonzero":
            parts["nonzero"] = torch.count_nonzero(f)
    return parts


_scratch = threading.local()

#: the reused squares buffer holds at most this many values per thread (4 MB of float32); bigger
#: tensors are squared and summed chunk by chunk through it
SQUARES_CHUNK = 1 << 20


def _sum_squares(f: torch.Tensor) -> torch.Tensor:
    """sum(f * f) as a 0-dim tensor: cascade sums in f's dtype (past SQUARES_CHUNK values one per
    chunk, the chunks added in float64). On the CPU the squares go into a reused per-thread
    buffer: a fresh temporary of a big tensor costs page faults on every call (measured in an
    MLP's loop: 195 us against 120 us for 200k values)."""
    if f.device.type != "cpu":
        return (f * f).sum()
    n = f.numel()
    want = min(n, SQUARES_CHUNK)
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < want or buf.dtype != f.dtype:
        buf = _scratch.buf = torch.empty(want, dtype=f.dtype)
    if n <= SQUARES_CHUNK:
        return torch.mul(f, f, out=buf[:n]).sum()
    total = 0.0
    for i in range(0, n, SQUARES_CHUNK):
        c = f[i:i + SQUARES_CHUNK]
        total += float(torch.mul(c, c, out=buf[:c.numel()]).sum())
    return torch.tensor(total, dtype=torch.float64)


def _scalar_passes(x: float, heavy) -> Dict[str, float]:
    """`_pass_tensors` of a one-value tensor (a loss) in Python float64 arithmetic: what numpy
    computes for it, without four torch calls and a transfer (~100 us on a CPU). Of one value,
    min, max and sum are the operand itself."""
    return {key: _operand(x, of, float) for p in heavy for key, _, of in _PASSES[p]}


def _operand(x, of: str, count):
    """What a `_PASSES` row reduces, of float64 values `x`: a Python float, a numpy array or a
    torch tensor alike (all three take `x * x`, `abs(x)` and comparisons); a 0/1 flag goes
    through `count`, the cast under which its sum is an exact count."""
    if of == "x":
        return x
    if of == "sq":
        return x * x
    if of == "abs":
        return abs(x)
    if of == "isnan":
        return count(x != x)
    if of == "isinf":
        return count(abs(x) == math.inf)
    return count(x != 0)


_COUNT_TORCH = methodcaller("double")  # float64 sums of 0/1 are exact up to 2^53
_COUNT_NUMPY = methodcaller("astype", np.int64)


def work(tensor: torch.Tensor) -> Tuple[torch.Tensor, bool, np.dtype]:
    """(flat work tensor, is floating point, histogram edge dtype) of `tensor`: what
    `reduce_work` takes. The flat tensor may share memory with `tensor`."""
    if as_is(tensor):  # the usual case, fast
        return tensor.detach().reshape(-1), True, _PLAIN_FLOATS[tensor.dtype]
    t = plain(tensor)
    return _work_tensor(t), t.is_floating_point(), _bin_dtype(t)


def snapshot(tensor: torch.Tensor, buffer=None) -> Tuple[torch.Tensor, bool, np.dtype]:
    """`work(tensor)` with memory of its own (one on-device copy when it would share memory with
    `tensor`), so it can be reduced later, after an optimizer changed `tensor` in place.
    `buffer(numel, dtype, device)` may supply a recycled flat tensor to copy into (no fresh
    allocation, so no page faults)."""
    f, is_float, edge = work(tensor)
    if tensor.layout == torch.strided and f.numel() and f.data_ptr() == tensor.data_ptr():
        b = buffer(f.numel(), f.dtype, f.device) if buffer is not None else None
        f = b.copy_(f) if b is not None else f.clone()
    return f, is_float, edge


def reduce_work(items: Sequence[Tuple[torch.Tensor, bool, np.dtype]], names: Tuple[str, ...],
                bins: int = 64) -> List[np.ndarray]:
    """Packed reductions (tensortap.reductions.pack, canonical `names`) of each `work()` item:
    small CPU tensors all together in a few numpy calls (`_small_passes`), the others with a few
    torch calls each and one host transfer per device for all of them (plus one for the
    histograms), then float64 scalar arithmetic in Python. Agrees with reduce_numpy."""
    heavy = dict.fromkeys(p for r in names for p in _HEAVY.get(r, ()))
    vals: List[Any] = [None] * len(items)
    host_paths = not CPU_AS_ACCELERATOR
    for i, (f, _, _) in enumerate(items):
        if f.numel() == 1 and f.device.type == "cpu" and host_paths:
            vals[i] = _scalar_passes(float(f.item()), heavy)
    small = [i for i, (f, _, _) in enumerate(items) if vals[i] is None and host_paths
             and 0 < f.numel() <= SMALL_NUMEL and f.dtype in _PLAIN_FLOATS and f.device.type == "cpu"]
    if len(small) > 1:  # (for one, the torch path costs the same)
        for i, v in zip(small, _small_passes([items[i][0] for i in small], heavy)):
            vals[i] = v
    scalars: Dict[torch.device, List[torch.Tensor]] = {}  # 0-dim pass results, per device
    blocks: Dict[torch.device, List[torch.Tensor]] = {}  # (passes x tensors) results of segmented passes
    where = []  # (item, device, its block or -1, offset, keys, stride)
    grouped = set()
    centred = "std" in names or "variance" in names
    for group in _segment_groups(items, vals):
        grouped.update(group)
        rows, keys = _segment_passes([items[i][0] for i in group], heavy, centred)
        lst = blocks.setdefault(rows.device, [])
        where.extend((i, rows.device, len(lst), j, keys, len(group)) for j, i in enumerate(group))
        lst.append(rows)
    for i, (f, is_float, _) in enumerate(items):
        if vals[i] is not None or i in grouped:
            continue
        n = f.numel()
        needed = [p for p in heavy if (n or p in ("nan", "inf", "nonzero")) and (is_float or p not in ("nan", "inf"))]
        got = _pass_tensors(f, needed)
        lst = scalars.setdefault(f.device, [])
        where.append((i, f.device, -1, len(lst), tuple(got), 1))
        lst.extend(got.values())
    host = {dev: _to_host(scalars.get(dev, []), blocks.get(dev, [])) for dev in scalars.keys() | blocks.keys()}
    for i, dev, b, off, keys, stride in where:
        sc, bl = host[dev]
        if b < 0:
            vals[i] = dict(zip(keys, sc[off:off + len(keys)]))
        else:  # pass-major rows: item `off`'s value of the r-th key at r * stride + off
            vals[i] = {k: bl[b][r * stride + off] for r, k in enumerate(keys)}
    hists: Dict[int, object] = {}
    if "histogram" in names:
        hists = _histograms(items, vals, bins)
    return [_finish(f, v, names, hists.get(i)) for i, ((f, _, _), v) in enumerate(zip(items, vals))]


def _to_host(scalars: List[torch.Tensor], blocks: List[torch.Tensor]) -> Tuple[List[float], List[List[float]]]:
    """Python floats of one device's pass results: one transfer for an accelerator (a cat to
    float64 is exact for float32 min/max, int64 counts and the sums); CPU scalars read directly
    (a stack costs more than the reads)."""
    if not blocks and (not scalars or scalars[0].device.type == "cpu"):
        return [float(t.item()) for t in scalars], []
    parts = ([torch.stack(scalars).double()] if scalars else []) + [b.reshape(-1) for b in blocks]
    flat = torch.cat(parts).tolist() if len(parts) > 1 else parts[0].tolist()
    k = len(scalars)
    out = []
    for b in blocks:
        out.append(flat[k:k + b.numel()])
        k += b.numel()
    return flat[:len(scalars)], out


#: accelerator float tensors of one device and dtype are reduced together (`_segment_passes`)
#: when there are at least this many of them
SEGMENT_MIN = 3
#: and at most this many values in one segmented pass (its float64 temporaries: 128 MB each);
#: bigger tensors take the per-tensor passes
SEGMENT_MAX_VALUES = 1 << 24
#: reduce CPU tensors the way accelerator tensors are (segmented passes, no numpy or Python-float
#: shortcuts): off, since on a CPU those are faster; tests turn it on to check that path without a GPU
CPU_AS_ACCELERATOR = False
_lengths_cache: Dict[tuple, torch.Tensor] = {}
_HAS_SEGMENT_REDUCE = hasattr(torch, "segment_reduce")


def _segment_groups(items, vals) -> List[List[int]]:
    """Indices of the items `_segment_passes` takes: non-empty float32/float64 tensors on an
    accelerator not reduced yet, grouped by device and dtype (dtypes mixed would widen each
    other), split where a group would pass SEGMENT_MAX_VALUES; groups of SEGMENT_MIN or more."""
    if not _HAS_SEGMENT_REDUCE:
        return []
    groups: Dict[tuple, List[List[int]]] = {}
    filled: Dict[tuple, int] = {}
    for i, (f, _, _) in enumerate(items):
        n = f.numel()
        if (vals[i] is None and (CPU_AS_ACCELERATOR or f.device.type != "cpu") and f.dtype in _PLAIN_FLOATS
                and 0 < n <= SEGMENT_MAX_VALUES):
            key = (f.device, f.dtype)
            lst = groups.setdefault(key, [[]])
            if filled.get(key, 0) + n > SEGMENT_MAX_VALUES:
                lst.append([])
                filled[key] = 0
            lst[-1].append(i)
            filled[key] = filled.get(key, 0) + n
    return [g for lst in groups.values() for g in lst if len(g) >= SEGMENT_MIN]


def _segment_passes(flats: List[torch.Tensor], heavy, centred: bool) -> Tuple[torch.Tensor, Tuple[str, ...]]:
    """`_pass_tensors` of many non-empty float tensors of one device and dtype at once: one
    float64 concatenation, then one segmented reduction per pass over all of them (a (passes x
    tensors) float64 tensor and its row keys). On a GPU that is a few kernels in all instead of a
    few per tensor: at ~124 tensors a step (a ResNet's weights and gradients) the launches alone
    cost more than the step. Sums are float64 (float32 products are exact in it); with `centred`
    also the sum of squared deviations from each tensor's mean ("csumsq", a two-pass variance:
    no cancellation to correct later, e.g. for BatchNorm weights at 1.0)."""
    x = (torch.cat(flats) if len(flats) > 1 else flats[0]).double()
    sizes = tuple(f.numel() for f in flats)
    lengths = _lengths_cache.get((sizes, x.device))
    if lengths is None:
        if len(_lengths_cache) > 256:
            _lengths_cache.clear()
        lengths = _lengths_cache[(sizes, x.device)] = torch.tensor(sizes, dtype=torch.int64).to(x.device)

    def seg(data: torch.Tensor, how: str) -> torch.Tensor:
        return torch.segment_reduce(data, how, lengths=lengths, unsafe=True)  # unsafe: no checking sync

    rows: Dict[str, torch.Tensor] = {}
    operands: Dict[str, torch.Tensor] = {"x": x}
    for p in heavy:
        for key, how, of in _PASSES[p]:
            data = operands.get(of)
            if data is None:
                data = operands[of] = _operand(x, of, _COUNT_TORCH)
            rows[key] = seg(data, how)
    if centred:
        total = rows["sum"] if "sum" in rows else seg(x, "sum")
        mean = total / lengths
        c = x - torch.repeat_interleave(mean, lengths, output_size=x.numel())  # output_size: no sync
        rows["csumsq"] = seg(c * c, "sum")
    if not rows:
        return x.new_zeros((0, len(flats))), ()
    return torch.stack(list(rows.values())), tuple(rows)


#: CPU float tensors up to this many values are reduced together (`_small_passes`)
SMALL_NUMEL = 65536


def _small_passes(flats: List[torch.Tensor], heavy) -> List[Dict[str, float]]:
    """`_pass_tensors` of many small, non-empty CPU float tensors at once, as host floats: one
    float64 concatenation, then one numpy `reduceat` per row of `_PASSES` over all of them
    (per-tensor torch calls cost more than the arithmetic on tensors this small: biases, norm layers)."""
    x = np.concatenate([f.numpy() for f in flats]).astype(np.float64, copy=False)
    starts = np.cumsum([0] + [f.numel() for f in flats[:-1]])
    out: List[Dict[str, float]] = [{} for _ in flats]
    operands: Dict[str, np.ndarray] = {"x": x}
    for p in heavy:
        for key, how, of in _PASSES[p]:
            data = operands.get(of)
            if data is None:
                data = operands[of] = _operand(x, of, _COUNT_NUMPY)
            for d, v in zip(out, _NP_REDUCE[how].reduceat(data, starts).tolist()):
                d[key] = v
    return out


_NP_REDUCE = {"min": np.minimum, "max": np.maximum, "sum": np.add}


def _histograms(items, vals, bins: int) -> Dict[int, np.ndarray]:
    """Histograms of every item: all-finite tensors binned on their known min/max, their counts
    fetched in one transfer per device; tensors holding NaN/inf filtered first (rare)."""
    out: Dict[int, np.ndarray] = {}
    pending: Dict[torch.device, list] = {}
    for i, ((f, _, edge), v) in enumerate(zip(items, vals)):
        lo, hi = v.get("min", math.nan), v.get("max", math.nan)
        if not f.numel() or not (math.isfinite(lo) and math.isfinite(hi)):
            out[i] = _histogram(f, bins, edge)
            continue
        counts, edges = _counts(f, lo, hi, bins, edge)
        pending.setdefault(f.device, []).append((i, counts, edges))
    for lst in pending.values():
        allc = torch.cat([c for _, c, _ in lst]).double().cpu().numpy()
        for k, (i, _, edges) in enumerate(lst):
            out[i] = np.concatenate([allc[k * bins:(k + 1) * bins], edges])
    return out


def _finish(f: torch.Tensor, v: Dict[str, float], names: Tuple[str, ...], hist) -> np.ndarray:
    n = f.numel()
    var = None
    if n == 1 and ("std" in names or "variance" in names):
        var = 0.0 * v["sum"]  # one value: no spread, nothing to centre (NaN for a NaN or inf, as numpy)
    elif n and "csumsq" in v:  # a two-pass variance (`_segment_passes`): exact, nothing to correct
        var = v["csumsq"] / n
    elif n and ("std" in names or "variance" in names):
        mean = v["sum"] / n
        var = v["sumsq"] / n - mean * mean
        # sumsq/n - mean^2 loses (mean^2/var) x the sums' relative error to cancellation: centre
        # first when that could exceed ~1e-6 (float32 sums: a mean above ~3 std; float64: 1e3 std)
        if not var > (0.1 if f.dtype == torch.float32 else 1e-6) * mean * mean:
            d = f.double()  # rare (a mean far from 0 against the spread: norm gains) and exact
            v["sum"] = float(d.sum())
            mean = v["sum"] / n
            c = d - mean
            var = float(torch.dot(c, c)) / n
        var = max(var, 0.0)
    nan = math.nan
    out = []
    for name in names:
        if name == "histogram":
            continue
        if name == "nan_count":
            x = v.get("nan", 0.0)
        elif name == "inf_count":
            x = v.get("inf", 0.0)
        elif name == "zero_count":
            x = n - v["nonzero"] if n else 0.0
        elif n == 0:
            x = nan
        elif name in ("min", "max", "sum", "l1", "abs_min", "abs_max"):
            x = v[name]
        elif name == "l2":
            x = math.sqrt(v["sumsq"])
        elif name == "mean":
            x = v["sum"] / n
        elif name == "abs_mean":
            x = v["l1"] / n
        elif name == "std":
            x = math.sqrt(var)
        elif name == "variance":
            x = var
        else:
            from tensortap.errors import ConfigError

            raise ConfigError(f"unknown reduction {name!r}")
        out.append(x)
    vec = np.asarray(out, dtype=np.float64)
    return np.concatenate([vec, hist]) if hist is not None else vec


def reduce_torch(tensor: torch.Tensor, names: Iterable[str], bins: int = 64) -> Dict[str, np.ndarray]:
    """Every requested reduction of `tensor`, computed where it lives (no copy of float64 data, one
    host transfer): a dict like tensortap.reductions.reduce_numpy's, which it agrees with."""
    names = list(names)
    order = canonical(names)
    vec = reduce_work([work(tensor)], order, bins)[0]
    got = {}
    for name in order:
        x = unpack(vec, order, name)
        got[name] = np.concatenate(x) if name == "histogram" else np.asarray(x, dtype=np.float64)
    return {name: got[name] for name in names}
