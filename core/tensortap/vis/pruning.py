"""`pruning`: accuracy against parameter count and model size across pruning iterations.

Reads the scalars pruning/params, pruning/size_mb and pruning/accuracy, saved once per pruning
iteration with hook.save_scalar (see contrib/tensortap-pruning).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..errors import ConfigError
from ._common import (Rendered, as_trial, compact_axis, fired_steps, plt, rule_thresholds, still_format,
                      write_figure)
from .base import Visualizer

KEYS = ("params", "size_mb", "accuracy")


def pruning_table(trial, prefix: str = "pruning/") -> Dict[str, np.ndarray]:
    """{"step", "params", "size_mb", "accuracy"} arrays over the steps where accuracy was saved."""
    if not trial.has_tensor(prefix + "accuracy"):
        raise ConfigError(f"no {prefix}accuracy in {trial.path}: save hook.save_scalar('{prefix}accuracy', acc) "
                          f"with '{prefix}params' and '{prefix}size_mb' once per pruning iteration")
    acc_t = trial.tensor(prefix + "accuracy")
    steps = acc_t.steps(kind="value")
    table = {"step": np.array(steps, dtype=np.int64)}
    for k in KEYS:
        vals = []
        t = trial.tensor(prefix + k) if trial.has_tensor(prefix + k) else None
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

    Options: prefix (default "pruning/"), log_x (parameter and size axes in log scale), floor (the
    accuracy floor to draw; default: the threshold the run's rule recorded, e.g. pruning_accuracy's).
    """

    name = "pruning"
    suffix = ".png"
    suffixes = (".jpg",)

    def applies_to(self, trial) -> bool:
        return trial.has_tensor("pruning/accuracy") and (trial.has_tensor("pruning/params")
                                                         or trial.has_tensor("pruning/size_mb"))

    def render(self, trial, out: str, *, prefix: str = "pruning/", log_x: bool = False,
               floor: Optional[float] = None) -> str:
        still_format(out)  # a format it cannot write is refused before anything is drawn
        trial = as_trial(trial)
        tab = pruning_table(trial, prefix)
        floors = [("floor", float(floor))] if floor is not None else rule_thresholds(trial, "accuracy")
        pyplot = plt()
        fig, axes = pyplot.subplots(1, 3, figsize=(14, 4.2))
        acc = tab["accuracy"]
        for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "size_mb", "model size (MB)")):
            x = tab[key]
            ok = np.isfinite(x) & np.isfinite(acc)
            if not ok.any():
                ax.text(0.5, 0.5, f"no {prefix}{key} saved", ha="center", va="center", transform=ax.transAxes)
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
