"""`distributions`: how a tensor's values spread over steps, as a histogram heat-map."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..progress import progress
from ._common import Rendered, as_trial, fast_histogram, fig_to_png, fired_steps, natural_key, plt, select_steps, write_bytes
from .base import Visualizer

DEFAULT_COLLECTIONS = ("weights", "gradients", "biases", "outputs")


def _hist_sources(trial, name: str, steps) -> List[Tuple[int, object]]:
    """(step, full array or (counts, edges)) for each chosen step: the value when saved, else the
    saved "histogram" reduction."""
    t = trial.tensor(name)
    out = []
    for s in steps:
        try:
            out.append((s, np.asarray(t.value(s))))
            continue
        except Exception:  # noqa: BLE001 - only reductions saved at this step
            pass
        try:
            c, e = t.reduction_value(s, "histogram")
            out.append((s, (np.asarray(c, np.float64), np.asarray(e, np.float64))))
        except Exception:  # noqa: BLE001
            continue
    return out


def histogram_matrix(sources, bins: int = 64, symlog: bool = False):
    """(bins, steps) counts on common edges for all steps, the edges, and the steps."""
    lo, hi = np.inf, -np.inf
    for _, v in sources:
        if isinstance(v, tuple):
            c, e = v
            nz = np.nonzero(c)[0]
            if nz.size:
                lo, hi = min(lo, e[nz[0]]), max(hi, e[nz[-1] + 1])
        elif v.size:
            f = v if v.dtype.kind == "f" else v.astype(np.float64)
            if not np.isfinite(f.sum(dtype=np.float64)):
                f = f[np.isfinite(f)]
            if f.size:
                lo, hi = min(lo, float(f.min())), max(hi, float(f.max()))
    if not np.isfinite(lo):
        lo, hi = 0.0, 1.0
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    mat = np.zeros((bins, len(sources)))
    for j, (_, v) in enumerate(sources):
        if isinstance(v, tuple):
            c, e = v
            centres = (e[:-1] + e[1:]) / 2
            mat[:, j] = np.histogram(centres, bins=edges, weights=c)[0]
        else:
            mat[:, j] = fast_histogram(v, bins, lo, hi)[0]
    return mat, edges, [s for s, _ in sources]


class DistributionsVisualizer(Visualizer):
    """A tensor's value distribution over steps: histogram heat-map (log colour), one panel per
    tensor, with steps where a rule fired marked. Uses full tensors or saved "histogram" reductions.

    Options: tensors (regex; default: weights and gradients), max_tensors, steps, max_steps, bins,
    log (log colour scale), mark_rules.
    """

    name = "distributions"
    suffix = ".png"

    def _names(self, trial, tensors: Optional[str], max_tensors: int) -> List[str]:
        """Tensors to draw: those matching `tensors`, else each parameter followed by its gradient,
        then other gradients, then layer outputs (natural order)."""
        if tensors:
            names = sorted(trial.tensor_names(regex=tensors), key=natural_key)
        else:
            params = sorted(set(trial.tensor_names(collection="weights")) | set(trial.tensor_names(collection="biases")),
                            key=lambda n: (natural_key(n.rsplit(".", 1)[0]), "bias" in n.rsplit(".", 1)[-1], natural_key(n)))
            grads = set(trial.tensor_names(collection="gradients"))
            names = []
            for n in params:
                names.append(n)
                if "gradients/" + n in grads:
                    names.append("gradients/" + n)
            names += sorted(grads - set(names), key=natural_key)
            names += sorted(set(trial.tensor_names(collection="outputs")) - set(names), key=natural_key)
        return names[: max(1, int(max_tensors))]

    def applies_to(self, trial) -> bool:
        return bool(self._names(trial, None, 1))

    def render(self, trial, out: str, *, tensors: Optional[str] = None, max_tensors: int = 6, steps=None,
               max_steps: int = 200, bins: int = 48, log: bool = True, mark_rules: bool = True,
               rule_results=None) -> str:
        trial = as_trial(trial)
        names = self._names(trial, tensors, max_tensors)
        if not names:
            raise ConfigError(f"no tensors in {trial.path}" + (f" match {tensors!r}" if tensors else
                              " in the weights/gradients/biases/outputs collections")
                              + "; pass tensors=REGEX (trial.tensor_names() lists them)")
        fired = fired_steps(trial, rule_results) if mark_rules else {}
        pyplot = plt()
        fig, axes = pyplot.subplots(len(names), 1, figsize=(8, 2.4 * len(names) + 0.4), squeeze=False)
        for i, name in enumerate(progress(names, "distributions")):
            ax = axes[i][0]
            chosen = select_steps(trial.tensor(name).steps(), steps, max_steps)
            mat, edges, st = histogram_matrix(_hist_sources(trial, name, chosen), int(bins))
            if not st:
                ax.set_title(f"{name}: nothing readable")
                continue
            shown = np.log1p(mat) if log else mat
            x = np.asarray(st, dtype=np.float64)
            if len(x) == 1:
                xe = np.array([x[0] - 0.5, x[0] + 0.5])
            else:
                mid = (x[:-1] + x[1:]) / 2
                xe = np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])
            ax.pcolormesh(xe, edges, shown, cmap="viridis", shading="flat")
            for rule, rsteps in fired.items():
                for s in rsteps:
                    if xe[0] <= s <= xe[-1]:
                        ax.axvline(s, color="red", linewidth=1.2, alpha=0.8)
                        ax.text(s, edges[-1], rule, color="red", fontsize=6, rotation=90, va="top")
            ax.set_title(name, fontsize=9)
            ax.set_ylabel("value")
            ax.set_xlabel("step")
        fig.tight_layout()
        return Rendered(write_bytes(out, fig_to_png(fig)))
