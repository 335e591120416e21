"""`tensortap export-tensorboard RUN --out DIR`: a run as TensorBoard event files.

Scalars (losses, metrics, saved scalars, and scalar reductions of any tensor as `<name>/<reduction>`),
histograms (weights, biases, gradients: from full values or saved "histogram" reductions) and
Grad-CAM overlays as images. One sub-directory per mode (train/, eval/, predict/) so TensorBoard
overlays them as runs; the x axis is the global step. Exporting again into the same directory
replaces the earlier export; `follow=True` (`--follow`) appends the steps of a live run as it grows.
"""
from __future__ import annotations

import io
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..progress import progress
from ..trial import VALUE
from .tfevents import EventWriter, histogram_value, image_value, scalar_value

SCALAR_COLLECTIONS = ("losses", "metrics", "scalars")
HIST_COLLECTIONS = ("weights", "biases", "gradients")
SCALAR_REDUCTIONS = ("min", "max", "mean", "std", "variance", "sum", "l1", "l2", "abs_min", "abs_max",
                     "abs_mean", "nan_count", "inf_count", "zero_count")


def _wall_time(trial, step: int) -> Optional[float]:
    for r in trial._readers():  # the time the step was written, when the index has it
        si = r.steps.get(step)
        if si is not None and getattr(si, "time", None):
            return float(si.time)
    return None


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _gradcam_images(trial, max_images: int, only: Optional[List[int]] = None) -> Dict[int, List[tuple]]:
    """step -> [(tag, png, h, w)]: Grad-CAM overlays of each layer, one scale across the steps
    exported together (`only`: those steps; default all)."""
    from ..vis.gradcam import GradCAMVisualizer, _grid, gradcam_layers

    out: Dict[int, List[tuple]] = {}
    if not trial.has_tensor("gradcam/images"):
        return out
    vis = GradCAMVisualizer()
    for layer in gradcam_layers(trial):
        steps = trial.tensor(f"gradcam/{layer}/cam").steps(kind=VALUE)
        if only is not None:
            keep = set(only)
            steps = [st for st in steps if st in keep]
        if not steps:
            continue
        for step, cells in vis.cells(trial, layer, steps, max_images=max_images, cell=96):
            rgb = _grid([cells], pad=2)
            out.setdefault(step, []).append((f"gradcam/{layer}", _png(rgb), rgb.shape[0], rgb.shape[1]))
    return out


#: the name every event file tensortap writes ends with (EventWriter's suffix): only these are replaced
OWN_SUFFIX = ".tensortap"


def remove_previous(out: str) -> List[str]:
    """Delete the event files an earlier export wrote under `out`/<mode>/ (only tensortap's own,
    named *.tensortap): exporting again replaces the series instead of doubling them."""
    gone: List[str] = []
    if not os.path.isdir(out):
        return gone
    for mode in os.listdir(out):
        d = os.path.join(out, mode)
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        for f in os.listdir(d):
            if f.startswith("events.out.tfevents.") and f.endswith(OWN_SUFFIX):
                os.remove(os.path.join(d, f))
                gone.append(os.path.join(d, f))
    return gone


class _Export:
    """Writes steps of one trial as events, one writer per mode, remembering what it wrote."""

    def __init__(self, trial, out: str, histograms: bool, images: bool, reductions: bool,
                 hist_regex: Optional[str], bins: int, max_images: int) -> None:
        self.trial, self.out = trial, out
        self.histograms, self.images, self.reductions = histograms, images, reductions
        self.hist_regex, self.bins, self.max_images = hist_regex, int(bins), max_images
        self.writers: Dict[str, EventWriter] = {}
        self.counts: Dict[str, dict] = {}
        self.done: set = set()

    def _names(self) -> Tuple[List[str], List[str], Dict[str, List[str]], List[str]]:
        """(scalar names, histogram names, name -> its scalar reductions, names with only reductions)."""
        trial = self.trial
        scalar_names = trial.tensor_names(collection=list(SCALAR_COLLECTIONS))
        hist_names: List[str] = []
        if self.histograms:
            hist_names = (trial.tensor_names(regex=self.hist_regex) if self.hist_regex
                          else trial.tensor_names(collection=list(HIST_COLLECTIONS)))
            hist_names = [n for n in hist_names
                          if n not in scalar_names and not n.startswith(("gradcam/", "attention/"))]
        red_kinds = _scalar_reductions(trial) if self.reductions else {}
        others = sorted(n for n in red_kinds if n not in scalar_names)
        return scalar_names, hist_names, red_kinds, others

    def write(self, steps: List[int], desc: str = "export-tensorboard") -> int:
        """Export `steps` (those not exported yet); returns how many had something to write."""
        trial = self.trial
        steps = [s for s in steps if s not in self.done]
        if not steps:
            return 0
        scalar_names, hist_names, red_kinds, others = self._names()
        cams = _gradcam_images(trial, self.max_images, steps) if self.images else {}
        written = 0
        for s in progress(steps, desc):
            self.done.add(s)
            at = set(trial.tensor_names(step=s))
            m = trial.mode(s)
            mode = m.value if m is not None else "global"
            values: List[bytes] = []
            c = self.counts.setdefault(mode, {"scalars": 0, "histograms": 0, "images": 0, "events": 0})
            for n in scalar_names:
                if n in at:
                    v = _scalar(trial, n, s)
                    if v is not None:
                        values.append(scalar_value(n, v))
                        c["scalars"] += 1
            for n in hist_names:
                if n in at:
                    h = _histogram(trial, n, s, self.bins)
                    if h is not None:
                        values.append(histogram_value(n, *h))
                        c["histograms"] += 1
            for n in others:
                if n in at:
                    t = trial.tensor(n)
                    for red in red_kinds[n]:
                        try:
                            vec = np.asarray(t.reduction_value(s, red), dtype=np.float64)
                        except Exception:  # noqa: BLE001 - that reduction was not saved at this step
                            continue
                        if vec.size == 1:
                            values.append(scalar_value(f"{n}/{red}", float(vec.reshape(-1)[0])))
                            c["scalars"] += 1
            for tag, png, h, w in cams.get(s, ()):
                values.append(image_value(tag, png, h, w))
                c["images"] += 1
            if not values:
                continue
            if mode not in self.writers:
                self.writers[mode] = EventWriter(os.path.join(self.out, mode))
            self.writers[mode].add(s, values, _wall_time(trial, s))
            c["events"] += 1
            written += 1
        for w in self.writers.values():
            w.flush()
        return written

    def close(self) -> Dict[str, dict]:
        for w in self.writers.values():
            w.close()
        for mode, w in self.writers.items():
            self.counts[mode]["file"] = w.path
        return {m: c for m, c in self.counts.items() if c["events"]}


def export_tensorboard(run, out: str, *, histograms: bool = True, images: bool = True, reductions: bool = True,
                       hist_regex: Optional[str] = None, bins: int = 30, max_images: int = 4, follow: bool = False,
                       poll: float = 1.0, timeout: Optional[float] = None,
                       on_batch: Optional[Callable[[int, int], None]] = None) -> Dict[str, dict]:
    """Write `run` (Trial or path) as event files under `out`/<mode>/; returns per mode the counts written.

    Exporting again into the same `out` replaces what an earlier export wrote there (its own
    *.tensortap event files), so no series is doubled. With `follow=True` it keeps going while
    the run is written: every `poll` seconds the new steps are appended to the same files, until
    the run is closed (or `timeout` seconds pass); `on_batch(steps, last_step)` hears of each batch."""
    from ..vis._common import as_trial

    trial = as_trial(run)
    if not trial.steps() and not follow:
        raise ConfigError(f"{trial.path} has no saved steps: nothing to export")
    remove_previous(out)
    ex = _Export(trial, out, histograms, images, reductions, hist_regex, bins, max_images)
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    try:
        ex.write(trial.steps())
        while follow:
            complete = trial.is_complete()
            trial.refresh()
            new = [s for s in trial.steps() if s not in ex.done]
            if new:
                n = ex.write(new, desc="export-tensorboard (following)")
                if on_batch is not None and n:
                    on_batch(n, new[-1])
            elif complete:
                break  # closed, and every step written before the end is out
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(poll)
    finally:
        counts = ex.close()
    return counts


def _scalar_reductions(trial) -> Dict[str, List[str]]:
    """tensor name -> the scalar reductions saved for it at some step (from the index, no data read)."""
    out: Dict[str, set] = {}
    for r in trial._readers():
        for name, recs in trial._red_nids(r).items():  # packed vectors and older one-per-reduction records
            out.setdefault(name, set()).update(n for _nid, names, _packed in recs for n in names
                                               if n in SCALAR_REDUCTIONS)
    return {n: sorted(k) for n, k in out.items() if k}


def _scalar(trial, name: str, step: int) -> Optional[float]:
    t = trial.tensor(name)
    try:
        v = np.asarray(t.value(step), dtype=np.float64)
        return float(v.mean()) if v.size else None
    except Exception:  # noqa: BLE001 - only reductions saved: use the mean
        pass
    try:
        return float(np.asarray(t.reduction_value(step, "mean"), dtype=np.float64).mean())
    except Exception:  # noqa: BLE001
        return None


def _histogram(trial, name: str, step: int, bins: int):
    """(counts, edges, stats): the histogram saved at capture time when there is one (no data to
    read or bin), else binned from the full value; None when neither is readable."""
    from ..vis._common import fast_histogram

    t = trial.tensor(name)
    try:
        counts, edges = t.reduction_value(step, "histogram")
        stats = None
        try:
            mn, mx = t.reduction_value(step, "min"), t.reduction_value(step, "max")
            c = np.asarray(counts, np.float64)
            centres = (np.asarray(edges)[:-1] + np.asarray(edges)[1:]) / 2
            stats = (float(mn), float(mx), float(c.sum()), float((c * centres).sum()), float((c * centres ** 2).sum()))
        except Exception:  # noqa: BLE001 - no exact min/max saved: estimated from the buckets
            pass
        return np.asarray(counts), np.asarray(edges), stats
    except Exception:  # noqa: BLE001 - no histogram reduction at this step
        pass
    try:
        v = np.asarray(t.value(step))
    except Exception:  # noqa: BLE001
        return None
    if v.dtype.kind not in "biuf" or v.size == 0:
        return None
    counts, edges, stats = fast_histogram(v, bins)
    return (counts, edges, stats) if stats[2] else None
