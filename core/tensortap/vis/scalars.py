"""`scalars`: losses, metrics and saved scalars over steps, one line per mode, runs overlaid."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from ._common import Rendered, as_trial, fired_steps, natural_key, plt, still_format, write_figure
from .base import Visualizer

COLLECTIONS = ("losses", "metrics", "scalars")
MODES = ("train", "eval", "predict", "global")


def scalar_names(trial, regex=None) -> List[str]:
    """Tensors of the losses/metrics/scalars collections (optionally filtered by regex)."""
    return sorted(trial.tensor_names(collection=list(COLLECTIONS), regex=regex), key=natural_key)


def _point(t, s: int) -> Optional[float]:
    """The value at step s averaged to one number; the saved "mean" reduction when only reductions were kept."""
    try:
        v = np.asarray(t.value(s), dtype=np.float64)
        return float(v.mean()) if v.size else float("nan")
    except Exception:  # noqa: BLE001 - only reductions at this step, or a damaged record
        pass
    try:
        return float(np.asarray(t.reduction_value(s, "mean"), dtype=np.float64).mean())
    except Exception:  # noqa: BLE001
        return None


def series(trial, name: str, x: str = "global") -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """mode -> (steps, values) of one scalar tensor; values of size > 1 are averaged. Steps are
    global (x="global") or each mode's own counter (x="mode")."""
    t = trial.tensor(name)
    by_mode: Dict[str, List[Tuple[int, float]]] = {}
    for s in t.steps():
        v = _point(t, s)
        if v is None:
            continue
        m = trial.mode(s)
        key = m.value.lower() if m is not None else "global"
        pos = s if x == "global" else trial.mode_step(s)
        by_mode.setdefault(key, []).append((s if pos is None else pos, v))
    return {m: (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) for m, pts in by_mode.items()}


class ScalarsVisualizer(Visualizer):
    """Losses, metrics and saved scalars over (global) steps; one line per mode; several runs overlaid
    (each run in its own colour, each mode in its own line style).

    Options: names (regex selecting tensors), logy ("auto", true, false), smooth (EMA weight 0..1),
    x ("global" steps, or "mode": each mode's own step counter),
    mark_rules (draw steps where a rule fired).
    """

    name = "scalars"
    suffix = ".png"
    suffixes = (".jpg",)

    def applies_to(self, trial) -> bool:
        return bool(scalar_names(trial))

    def render(self, trial, out: str, *, names: Optional[str] = None, logy: str = "auto", smooth: float = 0.0,
               mark_rules: bool = True, columns: int = 2, runs: Optional[Sequence] = None,
               x: str = "global") -> str:
        still_format(out)  # a format it cannot write is refused before anything is drawn
        trials = [as_trial(t) for t in (trial if isinstance(trial, (list, tuple)) else [trial])]
        trials += [as_trial(t) for t in (runs or [])]
        all_names: List[str] = []
        for t in trials:
            all_names += [n for n in scalar_names(t, names) if n not in all_names]
        all_names.sort(key=natural_key)
        if not all_names:
            raise ConfigError("no losses, metrics or scalars in " + ", ".join(t.path for t in trials)
                              + (f" matching {names!r}" if names else "")
                              + " (record them with hook.record_loss / hook.save_scalar)")
        if x not in ("global", "mode"):
            raise ConfigError(f"x must be 'global' (one step counter) or 'mode' (each mode's own), got {x!r}")
        if x == "mode":
            mark_rules = False  # rule results are recorded at global steps
        if not 0.0 <= float(smooth) < 1.0:
            raise ConfigError(f"smooth must be in [0, 1), got {smooth}")
        pyplot = plt()
        ncol = max(1, min(int(columns), len(all_names)))
        nrow = (len(all_names) + ncol - 1) // ncol
        fig, axes = pyplot.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.2 * nrow), squeeze=False)
        styles = {"train": "-", "eval": "--", "predict": ":", "global": "-."}
        colours = {"train": "tab:blue", "eval": "tab:orange", "predict": "tab:green", "global": "tab:gray"}
        several = len(trials) > 1  # then each run has its colour, and each mode its line style
        run_colour = [f"C{r % 10}" for r in range(len(trials))]
        fired = {t.path: fired_steps(t) for t in trials} if mark_rules else {}
        for i, name in enumerate(all_names):
            ax = axes[i // ncol][i % ncol]
            positive = True
            spans = []
            for r, t in enumerate(trials):
                if not t.has_tensor(name):
                    continue
                for mode, (xs, ys) in sorted(series(t, name, x).items(), key=lambda kv: MODES.index(kv[0])):
                    if smooth:
                        ys = _ema(ys, float(smooth))
                    label = f"{t.name} · {mode}" if several else mode
                    ax.plot(xs, ys, styles.get(mode, "-") if several else "-",
                            color=run_colour[r] if several else colours.get(mode), label=label,
                            marker="o" if len(xs) < 3 else None, markersize=3)
                    fin = ys[np.isfinite(ys)]
                    positive = positive and bool(fin.size) and bool((fin > 0).all())
                    if fin.size:
                        spans.append((fin.min(), fin.max()))
                for steps in fired.get(t.path, {}).values():
                    for s in steps:
                        ax.axvline(s, color="tab:red", alpha=0.35, linewidth=1)
            use_log = (logy is True or str(logy).lower() in ("true", "1", "yes")) or (
                str(logy).lower() == "auto" and positive and spans
                and max(s[1] for s in spans) / max(min(s[0] for s in spans), 1e-300) > 100)
            if use_log and positive:
                ax.set_yscale("log")
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step" if x == "global" else "step of its mode")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        for j in range(len(all_names), nrow * ncol):
            axes[j // ncol][j % ncol].axis("off")
        if any(fired.values()):
            fig.text(0.01, 0.005, "red lines: steps where a rule fired", fontsize=8, color="tab:red")
        fig.tight_layout()
        return Rendered(write_figure(out, fig))


def _ema(y: np.ndarray, w: float) -> np.ndarray:
    out = np.empty_like(y)
    acc = None
    for i, v in enumerate(y):
        acc = v if acc is None or not np.isfinite(acc) else w * acc + (1 - w) * v
        out[i] = acc
    return out
