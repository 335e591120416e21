"""The JSON the page asks for. Each function reads one run through its Trial (the caller holds
the run's lock) and returns plain data: lists, numbers (non-finite ones as null), strings."""
from __future__ import annotations

import base64
import math
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import ConfigError, TensorTapError
from ..trial import VALUE
from ..vis._common import fast_histogram, natural_key, pick_evenly, rule_thresholds, to_uint8_image
from ..vis.attention import _tokens_at, attention_layers
from ..vis.distributions import DistributionsVisualizer, histogram_matrix
from ..vis.gradcam import LABELS, gradcam_layers, saved_class_names
from ..vis.scalars import scalar_names
from . import rulelog
from .catalog import Catalog, Run, display
from .series import window

#: most names listed per collection in a run's overview
MAX_NAMES = 5000


class ViewError(TensorTapError):
    """A request the page cannot answer (bad parameter, missing tensor): shown as its message."""


def num(x) -> Optional[float]:
    """A JSON-safe number: NaN and infinities become null."""
    f = float(x)
    return f if math.isfinite(f) else None


def nums(a) -> List[Optional[float]]:
    return [v if math.isfinite(v) else None for v in np.asarray(a, np.float64).ravel().tolist()]


def _trial(run: Run):
    if run.trial is None:
        raise ViewError(run.error or "the run is still being opened")
    return run.trial


def _tensor(trial, name: str):
    if not isinstance(name, str) or not trial.has_tensor(name):
        raise ViewError(f"no tensor named {name!r} in this run")
    return trial.tensor(name)


def _in(steps: List[int], lo: Optional[int], hi: Optional[int]) -> List[int]:
    return [s for s in steps if (lo is None or s >= lo) and (hi is None or s <= hi)]


# ---- the runs ---------------------------------------------------------------------------------
def runs_view(catalog: Catalog) -> dict:
    out = []
    for run in catalog.all():
        if run.lock.acquire(timeout=0.5):
            try:
                out.append(run.summary())
            finally:
                run.lock.release()
        else:  # busy with a long request: what was shown last, rather than hold the whole list up
            out.append(run.last_summary())
    return {"path": display(catalog.path), "note": catalog.scan_note, "version": catalog.version, "runs": out}


def run_view(run: Run) -> dict:
    """The run page's skeleton: what the run holds, so the page knows which panels to draw."""
    summary = run.summary()
    if run.trial is None:
        return {"summary": summary}
    t = run.trial

    def make():
        colls = {c: sorted(n, key=natural_key)[:MAX_NAMES] for c, n in t.collections().items()}
        dist = DistributionsVisualizer()._names(t, None, MAX_NAMES)
        return {"collections": colls, "collection_sizes": {c: len(n) for c, n in t.collections().items()},
                "scalars": scalar_names(t), "distributions": dist,
                "gradcam": gradcam_layers(t) if t.has_tensor("gradcam/images") else [],
                "attention": attention_layers(t),
                "metadata": {k: str(v) for k, v in t.metadata.items()
                             if k in ("framework", "framework_version", "hostname", "pid", "tensortap_version")}}

    key = (len(t.tensor_names()), tuple(t.workers()), bool(t.steps()))  # what the skeleton depends on
    got = run.kept.get("overview")
    if got is None or got[0] != key:  # names only come, never go: recomputed when there are new ones
        got = run.kept["overview"] = (key, make())
    body = got[1]
    rules = run.rules()
    return {"summary": summary, **body,
            "rules": [{"name": n, **rl.counts()} for n, rl in rules.items()],
            "events": len(t.events()), "problems": t.problems[:50]}


# ---- scalars ------------------------------------------------------------------------------------
def _markers(run: Run, lo: Optional[int], hi: Optional[int], limit: int = 300) -> List[dict]:
    """Steps where a rule fired within [lo, hi] (evenly thinned to `limit`)."""
    out = [{"step": r["step"], "rule": name, "message": r["message"]}
           for name, rl in run.rules().items() for r in rl.of(rulelog.FIRED, lo, hi, limit)]
    out.sort(key=lambda m: m["step"])
    return pick_evenly(out, limit)


def scalars_view(run: Run, names: Optional[List[str]], lo: Optional[int], hi: Optional[int],
                 points: int) -> dict:
    t = _trial(run)
    all_names = scalar_names(t)
    names = all_names if names is None else [n for n in names if n in all_names]
    series = {}
    for n in names:
        s = run.series.get(t, n)
        modes = {}
        for mode, ms in s.by_mode().items():
            x, y, total = window(ms, lo, hi, points)
            modes[mode] = {"x": x.tolist(), "y": nums(y), "points": total}
        series[n] = modes
    return {"series": series, "markers": _markers(run, lo, hi), "range": [lo, hi],
            "steps": [t.steps()[0], t.steps()[-1]] if t.steps() else None}


# ---- rules --------------------------------------------------------------------------------------
def rules_view(run: Run, lo: Optional[int], hi: Optional[int], buckets: int, limit: int) -> dict:
    t = _trial(run)
    rules = run.rules()
    steps = t.steps()
    all_steps = [int(s) for rl in rules.values() for s in (rl.steps[:1].tolist() + rl.steps[-1:].tolist())]
    first = min(all_steps + steps[:1]) if (all_steps or steps) else 0
    last = max(all_steps + steps[-1:]) if (all_steps or steps) else 0
    lo_, hi_ = first if lo is None else lo, last if hi is None else hi
    out = []
    for name, rl in rules.items():
        out.append({"name": name, "counts": rl.counts(lo, hi), "buckets": rl.buckets(lo_, hi_, buckets)})
    results = [r for rl in rules.values() for r in rl.results(lo, hi, limit)]
    results.sort(key=lambda r: (r["outcome"] == "quiet", -r["step"]))
    return {"rules": out, "range": [lo_, hi_], "results": results[:limit],
            "legend": {"fired": "the rule fired", "quiet": "checked, nothing found",
                       "skipped": "nothing to check at that step (no data it needs)"}}


def rule_results_view(run: Run, rule: str, lo: Optional[int], hi: Optional[int], limit: int) -> dict:
    _trial(run)
    rl = run.rules().get(rule)
    if rl is None:
        raise ViewError(f"no results of rule {rule!r} in this run")
    return {"rule": rule, "results": rl.results(lo, hi, limit), "counts": rl.counts(lo, hi)}


# ---- distributions and tensors -----------------------------------------------------------------
def _hist_source(t, step: int):
    """The saved histogram at `step` (cheap), else the full value; None when neither is readable."""
    try:
        c, e = t.reduction_value(step, "histogram")
        return np.asarray(c, np.float64), np.asarray(e, np.float64)
    except Exception:  # noqa: BLE001 - not saved there: the value
        pass
    try:
        v = np.asarray(t.value(step))
    except Exception:  # noqa: BLE001
        return None
    return v if v.dtype.kind in "biuf" else None


def dist_view(run: Run, name: str, lo: Optional[int], hi: Optional[int], cols: int, bins: int) -> dict:
    t = _trial(run)
    tensor = _tensor(t, name)
    steps = _in(run.series.steps.get(t, name).tolist(), lo, hi)
    chosen = pick_evenly(steps, cols)

    def make():
        sources = [(s, v) for s in chosen for v in [_hist_source(tensor, s)] if v is not None]
        if not sources:
            return {"name": name, "steps": [], "note": "no readable value or histogram in this range"}
        mat, edges, st = histogram_matrix(sources, bins)
        return {"name": name, "steps": [int(s) for s in st], "edges": nums(edges),
                "counts": [nums(mat[:, j]) for j in range(mat.shape[1])],
                "shown": len(st), "in_range": len(steps)}

    return run.cached(("dist", name, tuple(chosen), bins), make)


def tensor_view(run: Run, name: str) -> dict:
    t = _trial(run)
    tensor = _tensor(t, name)
    steps = run.series.steps.get(t, name).tolist()
    return {"name": name, "collections": tensor.collections, "steps": steps, "workers": t.workers()}


def _stats(v: np.ndarray) -> dict:
    out: Dict[str, object] = {"shape": list(v.shape), "dtype": str(v.dtype), "size": int(v.size)}
    if v.dtype.kind in "US":
        flat = v.ravel()[:64]
        out["preview"] = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat.tolist()]
        return out
    if v.dtype.kind not in "biufc":
        return out
    f = np.asarray(v.real if v.dtype.kind == "c" else v, np.float64).ravel()
    fin = f[np.isfinite(f)]
    out.update(nan=int(np.isnan(f).sum()), inf=int(np.isinf(f).sum()), zeros=int((f == 0).sum()))
    if fin.size:
        out.update(min=num(fin.min()), max=num(fin.max()), mean=num(fin.mean()), std=num(fin.std()),
                   l2=num(np.sqrt(np.square(fin).sum())))
        counts, edges, _ = fast_histogram(fin, 40)
        out["histogram"] = {"counts": nums(counts), "edges": nums(edges)}
    out["preview"] = nums(f[:64])
    return out


def tensor_step_view(run: Run, name: str, step: int) -> dict:
    t = _trial(run)
    tensor = _tensor(t, name)
    out: Dict[str, object] = {"name": name, "step": step}
    try:
        m = t.mode(step)
        out["mode"] = m.value if m is not None else None
    except Exception:  # noqa: BLE001
        pass
    try:
        out["value"] = _stats(np.asarray(tensor.value(step)))
    except TensorTapError as e:
        out["value_note"] = str(e)
    reds: Dict[str, Any] = {}
    try:
        for k, v in tensor.reduction_values(step).items():
            if isinstance(v, tuple):
                reds[k] = {"counts": nums(v[0]), "edges": nums(v[1])}
            else:
                a = np.asarray(v, np.float64)
                reds[k] = num(a) if a.size == 1 else nums(a)
    except TensorTapError:
        pass
    out["reductions"] = reds
    if "value" not in out and "histogram" in reds:
        out["histogram"] = reds["histogram"]
    return out


# ---- Grad-CAM and attention ------------------------------------------------------------------------
def _latest(t, name: str, step: Optional[int] = None):
    """The value of `name` at `step`, or at its latest saved step; None when not saved."""
    if not t.has_tensor(name):
        return None
    tensor = t.tensor(name)
    steps = tensor.steps(kind=VALUE)
    if not steps:
        return None
    use = step if step in steps else (steps[-1] if step is None else None)
    if use is None:
        return None
    try:
        return np.asarray(tensor.value(use))
    except TensorTapError:
        return None


def gradcam_view(run: Run, layer: Optional[str], step: Optional[int], max_images: int) -> dict:
    t = _trial(run)
    layers = gradcam_layers(t)
    if not layers or not t.has_tensor("gradcam/images"):
        raise ViewError("this run has no Grad-CAM maps (record them with tensortap.explain.record_gradcam)")
    layer = layer if layer in layers else layers[0]
    cam_t = t.tensor(f"gradcam/{layer}/cam")
    steps = cam_t.steps(kind=VALUE)
    if not steps:
        raise ViewError(f"no readable Grad-CAM map of {layer!r}")
    step = step if step in steps else steps[-1]

    seen, top = run.kept.setdefault(("gradcam-max", layer), (set(), 0.0))
    for s in steps:  # the shared scale, kept up to date reading only the maps not read before
        if s not in seen:
            seen.add(s)
            top = max(top, float(np.nanmax(cam_t.value(s))))
    run.kept[("gradcam-max", layer)] = (seen, top)
    gmax = top or 1.0
    cam = np.asarray(cam_t.value(step), np.float64)
    if cam.ndim == 2:
        cam = cam[None]
    imgs = np.asarray(t.tensor("gradcam/images").value(step))
    targets = _latest(t, f"gradcam/{layer}/targets", step)
    scores = _latest(t, f"gradcam/{layer}/scores", step)
    labels = _latest(t, LABELS, step)
    class_names = saved_class_names(t)
    out = []
    for i in range(min(len(cam), len(imgs), max(1, max_images))):
        img = to_uint8_image(imgs[i])
        c = np.nan_to_num(cam[i])
        out.append({
            "width": int(img.shape[1]), "height": int(img.shape[0]),
            "rgb": base64.b64encode(np.ascontiguousarray(img).tobytes()).decode("ascii"),
            "cam": {"h": int(c.shape[0]), "w": int(c.shape[1]), "values": nums(c)},
            "pred": int(targets[i]) if targets is not None and i < len(targets) else None,
            "score": num(scores[i]) if scores is not None and i < len(scores) else None,
            "true": int(labels[i]) if labels is not None and i < len(labels) else None,
        })
    return {"layers": layers, "layer": layer, "steps": steps, "step": step, "shared_max": gmax,
            "step_max": num(cam.max()) if cam.size else None, "class_names": class_names, "images": out}


def attention_view(run: Run, step: Optional[int], example: int, max_tokens: int) -> dict:
    t = _trial(run)
    layers = attention_layers(t)
    if not layers:
        raise ViewError("this run has no attention maps (capture the \"attention\" collection)")
    steps = sorted(set().union(*[set(t.tensor(n).steps(kind=VALUE)) for n in layers]))
    if not steps:
        raise ViewError("no readable attention map in this run")
    step = steps[-1] if step is None or step not in steps else step
    maps: List[Optional[List[List[List[Optional[float]]]]]] = []
    batch = 0
    for n in layers:
        try:
            a = np.asarray(t.tensor(n).value(step), np.float64)
        except TensorTapError:
            maps.append(None)
            continue
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            raise ViewError(f"{n} at step {step} has shape {list(a.shape)}; attention is (batch, heads, query, key)")
        batch = max(batch, a.shape[0])
        e = min(max(0, example), a.shape[0] - 1)
        m = a[e, :, :max_tokens, :max_tokens]
        maps.append([[nums(np.round(row, 4)) for row in head] for head in m])
    n_tok = max((len(m[0]) for m in maps if m), default=0)
    example = min(max(0, example), max(batch - 1, 0))
    tokens = _tokens_at(t, step, example + 1, n_tok)[example] if n_tok else []
    return {"layers": [n[len("attention/"):] for n in layers], "steps": steps, "step": step, "example": example,
            "batch": batch, "tokens": tokens, "maps": maps}


# ---- events -----------------------------------------------------------------------------------
def events_view(run: Run, limit: int = 500) -> dict:
    t = _trial(run)
    events = t.events()
    shown = [{k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in e.items()}
             for e in events[-limit:]]
    skipped = []
    for name, rl in run.rules().items():
        c = rl.counts()
        if c["skipped"]:
            last = rl.of(rulelog.SKIPPED, limit=1)[-1]
            skipped.append({"rule": name, "skipped": c["skipped"], "of": sum(c.values()), "step": last["step"],
                            "message": last["message"]})
    return {"events": shown, "total": len(events), "problems": t.problems[:limit], "rules_skipped": skipped}


# ---- comparing runs --------------------------------------------------------------------------
def compare_view(catalog: Catalog, run_ids: List[str], names: Optional[List[str]], lo: Optional[int],
                 hi: Optional[int], points: int) -> dict:
    runs = [r for r in (catalog.get(i) for i in run_ids) if r is not None]
    available: List[str] = []
    out: Dict[str, Dict[str, dict]] = {}
    errors = {}
    for run in runs:
        with run.lock:
            if run.trial is None:
                errors[run.id] = run.error or "not open yet"
                continue
            own = scalar_names(run.trial)
            available += [n for n in own if n not in available]
            for n in (own if names is None else [n for n in names if n in own]):
                s = run.series.get(run.trial, n)
                per_mode = {}
                for mode, ms in s.by_mode().items():
                    x, y, total = window(ms, lo, hi, points)
                    per_mode[mode] = {"x": x.tolist(), "y": nums(y), "points": total}
                out.setdefault(n, {})[run.id] = per_mode
    return {"runs": [{"id": r.id, "name": r.name} for r in runs], "names": sorted(available, key=natural_key),
            "series": out, "errors": errors}


def xy_view(catalog: Catalog, run_ids: List[str], x: str, y: str, limit: int = 5000) -> dict:
    """Per run, scalar `y` against scalar `x` at the steps where both were saved, in step order."""
    if not x or not y:
        raise ViewError("choose the two scalars to plot against each other")
    out, errors = [], {}
    for rid in run_ids:
        run = catalog.get(rid)
        if run is None:
            continue
        with run.lock:
            if run.trial is None:
                errors[rid] = run.error or "not open yet"
                continue
            t = run.trial
            if not (t.has_tensor(x) and t.has_tensor(y)):
                missing = [n for n in (x, y) if not t.has_tensor(n)]
                errors[rid] = f"no {' or '.join(missing)} in this run"
                continue
            sx, sy = run.series.get(t, x), run.series.get(t, y)
            steps = np.intersect1d(sx.steps, sy.steps)
            idx = pick_evenly(list(range(len(steps))), limit)
            steps = steps[idx]
            out.append({"id": rid, "name": run.name, "steps": steps.tolist(), "x": nums(sx.at(steps)),
                        "y": nums(sy.at(steps))})
    return {"x": x, "y": y, "runs": out, "errors": errors, "thresholds": _thresholds(catalog, run_ids, y)}


def _thresholds(catalog: Catalog, run_ids: List[str], y: str) -> List[dict]:
    """Floors/ceilings rules recorded about `y` (its short name, e.g. pruning_accuracy's accuracy floor)."""
    out = []
    for rid in run_ids:
        run = catalog.get(rid)
        if run is None or run.trial is None:
            continue
        with run.lock:
            found = rule_thresholds(run.trial, y.rsplit("/", 1)[-1])
            out += [{"run": rid, "rule": rule, "value": v} for rule, v in found]
    return out


def check_int(value: Optional[str], what: str, lo: int = -(1 << 62), hi: int = 1 << 62) -> Optional[int]:
    """A query parameter as an int in [lo, hi] (None when absent); ConfigError naming it otherwise."""
    if value is None or value == "":
        return None
    try:
        v = int(value)
    except ValueError:
        raise ConfigError(f"{what} must be an integer, got {value!r}") from None
    return min(max(v, lo), hi)
