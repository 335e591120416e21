"""`distributions`: how a tensor's values spread over steps, as a histogram heat-map."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..progress import progress
from ._common import (Rendered, as_trial, compact, fast_histogram, fired_steps, natural_key, plt, select_steps,
                      still_format, write_figure)
from .base import Visualizer

DEFAULT_COLLECTIONS = ("weights", "gradients", "biases", "outputs")


def _hist_sources(trial, name: str, steps) -> List[Tuple[int, Any]]:
    """(step, full array or (counts, edges)) for each chosen step: the value when saved, else the
    saved "histogram" reduction."""
    t = trial.tensor(name)
    out: List[Tuple[int, Any]] = []
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
    suffixes = (".jpg",)

    def _names(self, trial, tensors: Optional[str], max_tensors: int) -> List[str]:
        """Tensors to draw: those matching `tensors`, else each parameter followed by its gradient,
        then other gradients, then layer outputs (natural order)."""
        if tensors:
            names = sorted(trial.tensor_names(regex=tensors), key=natural_key)
        else:
            params = sorted(set(trial.tensor_names(collection="weights"))
                            | set(trial.tensor_names(collection="biases")),
                            key=lambda n: (natural_key(n.rsplit(".", 1)[0]), "bias" in n.rsplit(".", 1)[-1],
                                           natural_key(n)))
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
        still_format(out)  # a format it cannot write is refused before anything is drawn
        trial = as_trial(trial)
        every = self._names(trial, tensors, 1 << 30)
        names = every[: max(1, int(max_tensors))]
        if not names:
            raise ConfigError(f"no tensors in {trial.path}" + (f" match {tensors!r}" if tensors else
                              " in the weights/gradients/biases/outputs collections")
                              + "; pass tensors=REGEX (trial.tensor_names() lists them)")
        fired = fired_steps(trial, rule_results) if mark_rules else {}
        pyplot = plt()
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter

        fig, axes = pyplot.subplots(len(names), 1, figsize=(9, 2.5 * len(names) + 1.0), squeeze=False,
                                    constrained_layout=True)
        rule_colours = {r: c for r, c in zip(fired, ("red", "magenta", "orange", "white", "cyan", "yellow"))}
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
            mesh = ax.pcolormesh(xe, edges, shown, cmap="viridis", shading="flat")
            bar = fig.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04)
            bar.set_label("count (log scale)" if log else "count", fontsize=8)
            if log:  # ticks at round counts, placed on the log1p scale the colours use
                top = float(mat.max()) if mat.size else 1.0
                counts = [c for c in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 1e5, 1e6, 1e7, 1e8)
                          if c <= top]
                if len(counts) > 6:
                    counts = counts[::2]
                bar.set_ticks(np.log1p(counts))
                bar.formatter = FuncFormatter(lambda v, _p: compact(round(float(np.expm1(v)))))
                bar.update_ticks()
            for rule, rsteps in fired.items():  # marked by colour; named in the legend, not on the lines
                for s in rsteps:
                    if xe[0] <= s <= xe[-1]:
                        ax.axvline(s, color=rule_colours.get(rule, "red"), linewidth=1.2, alpha=0.8)
            ax.set_title(name, fontsize=9)
            ax.set_ylabel("value")
            ax.set_xlabel("step")
        if fired:
            handles = [Line2D([0], [0], color=rule_colours.get(r, "red"), linewidth=1.5) for r in fired]
            fig.legend(handles, [f"{r} fired" for r in fired], loc="outside lower center", ncol=min(4, len(fired)),
                       fontsize=8, frameon=False)
        note = (f"showing {len(names)} of {len(every)} tensors (pass tensors=REGEX or max_tensors=N for the others)"
                if len(every) > len(names) else f"all {len(names)} tensor{'s' if len(names) != 1 else ''}")
        fig.suptitle(f"distributions over steps · {trial.name} · {note}", fontsize=9)
        return Rendered(write_figure(out, fig))
