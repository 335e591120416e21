"""Accuracy against parameter count and model size across pruning iterations.

Reads three scalars saved once per pruning iteration with hook.save_scalar: accuracy, parameter
count and model size. Their names belong to the pruning plugin that saves them: it registers a
subclass naming them (`scalars`; tensortap-pruning registers the `pruning` visualizer this way),
or they are passed as the options accuracy=, params=, size_mb=.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ._common import (Rendered, as_trial, compact_axis, fired_steps, plt, rule_thresholds, still_format,
                      write_figure)
from .base import Visualizer

KEYS = ("params", "size_mb", "accuracy")


def pruning_table(trial, scalars: Dict[str, str]) -> Dict[str, np.ndarray]:
    """{"step", "params", "size_mb", "accuracy"} arrays over the steps where accuracy was saved;
    `scalars` names the tensor of each key."""
    acc_name = scalars.get("accuracy")
    if not acc_name:
        raise ConfigError("name the accuracy scalar: render(..., accuracy='<name>', params='<name>', size_mb='<name>')")
    if not trial.has_tensor(acc_name):
        raise ConfigError(f"no {acc_name} in {trial.path}: save hook.save_scalar('{acc_name}', acc) with "
                          f"'{scalars.get('params')}' and '{scalars.get('size_mb')}' once per pruning iteration")
    acc_t = trial.tensor(acc_name)
    steps = acc_t.steps(kind="value")
    table = {"step": np.array(steps, dtype=np.int64)}
    for k in KEYS:
        vals = []
        name = scalars.get(k)
        t = trial.tensor(name) if name and trial.has_tensor(name) else None
        for s in steps:
            try:
                vals.append(float(np.asarray(t.value(s)).mean()) if t is not None else np.nan)
            except Exception:  # noqa: BLE001 - not saved at that step
                vals.append(np.nan)
        table[k] = np.array(vals)
    return table


class PruningVisualizer(Visualizer):
    """Accuracy against parameter count and against model size over pruning iterations
    (each point labelled with its iteration), plus accuracy per iteration; the accuracy floor of
    the rule that stops pruning drawn on each.

    Options: accuracy, params, size_mb (the scalars' names; default: those of the plugin that
    registered it), log_x (parameter and size axes in log scale), floor (the accuracy floor to
    draw; default: the threshold the run's rule recorded, e.g. pruning_accuracy's).
    """

    name = "pruning_plot"
    suffix = ".png"
    suffixes = (".jpg",)
    #: "accuracy", "params", "size_mb" -> the scalar holding it; set by the plugin saving them
    scalars: Dict[str, str] = {}

    def names(self, accuracy: str = "", params: str = "", size_mb: str = "") -> Dict[str, str]:
        """The scalars' names: the class's, overridden by the non-empty arguments."""
        given = {"accuracy": accuracy, "params": params, "size_mb": size_mb}
        return {k: given[k] or self.scalars.get(k, "") for k in KEYS}

    def applies_to(self, trial) -> bool:
        n = self.names()
        return bool(n["accuracy"]) and trial.has_tensor(n["accuracy"]) and any(
            n[k] and trial.has_tensor(n[k]) for k in ("params", "size_mb"))

    def table(self, trial) -> Optional[Tuple[List[str], List[tuple]]]:
        """(header, rows): accuracy against parameters at each iteration, for the report."""
        tab = pruning_table(as_trial(trial), self.names())
        rows = [(i, int(s), "-" if not np.isfinite(p) else f"{p:,.0f}", "-" if not np.isfinite(m) else f"{m:.3f}",
                 "-" if not np.isfinite(a) else f"{a:.4f}")
                for i, (s, p, m, a) in enumerate(zip(tab["step"], tab["params"], tab["size_mb"], tab["accuracy"]))]
        return ["iteration", "step", "parameters", "size (MB)", "accuracy"], rows

    def render(self, trial, out: str, *, accuracy: str = "", params: str = "", size_mb: str = "",
               log_x: bool = False, floor: Optional[float] = None) -> str:
        still_format(out)  # a format it cannot write is refused before anything is drawn
        trial = as_trial(trial)
        names = self.names(accuracy, params, size_mb)
        tab = pruning_table(trial, names)
        floors = [("floor", float(floor))] if floor is not None else rule_thresholds(trial, "accuracy")
        pyplot = plt()
        fig, axes = pyplot.subplots(1, 3, figsize=(14, 4.2))
        acc = tab["accuracy"]
        for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "size_mb", "model size (MB)")):
            x = tab[key]
            ok = np.isfinite(x) & np.isfinite(acc)
            if not ok.any():
                ax.text(0.5, 0.5, f"no {names[key] or key} saved", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            ax.plot(x[ok], acc[ok], "-o", color="tab:blue", markersize=4)
            for i in np.nonzero(ok)[0]:
                ax.annotate(str(i), (x[i], acc[i]), textcoords="offset points", xytext=(3, 3), fontsize=7)
            if log_x:
                ax.set_xscale("log")
            ax.invert_xaxis()  # pruning goes right to left: fewer parameters over time
            compact_axis(ax.xaxis)  # 1.2M, 350k: no "1e6" in the corner (after set_xscale, which resets it)
            ax.set_xlabel(label + (", log scale" if log_x else "") + " (iteration numbers on points)")
            ax.set_ylabel("accuracy")
            ax.grid(alpha=0.3)
        axes[2].plot(np.arange(len(acc)), acc, "-o", color="tab:green", markersize=4)
        fired = fired_steps(trial)
        for rule, steps in fired.items():
            for s in steps:
                hit = np.nonzero(tab["step"] == s)[0]
                if hit.size:
                    axes[2].axvline(hit[0], color="tab:red", alpha=0.6)
                    axes[2].text(hit[0], np.nanmax(acc), rule, color="tab:red", fontsize=7, rotation=90, va="top")
        from matplotlib.ticker import MaxNLocator

        axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
        axes[2].set_xlabel("pruning iteration")
        axes[2].set_ylabel("accuracy")
        axes[2].grid(alpha=0.3)
        for ax in axes:
            if not ax.axison:
                continue
            for rule, value in floors:
                ax.axhline(value, color="tab:red", linestyle="--", linewidth=1.2,
                           label=f"accuracy floor {value:g}" + (f" ({rule})" if rule != "floor" else ""))
        if floors and axes[0].axison:
            axes[0].legend(fontsize=8, loc="lower left")
        fig.suptitle(f"pruning · {trial.name}", fontsize=10)
        fig.tight_layout()
        return Rendered(write_figure(out, fig))
