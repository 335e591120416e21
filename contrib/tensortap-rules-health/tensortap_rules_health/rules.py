"""The rules. Public API only: tensortap.rules.Rule / RuleResult and the trial's read methods."""
from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np

import tensortap as tt
from tensortap.rules import Need, Rule, RuleResult


def _names(value) -> Optional[List[str]]:
    if value is None:
        return None
    return [v for v in value.split(",") if v] if isinstance(value, str) else list(value)


def _train(trial, step: int) -> bool:
    return trial.mode(step) == tt.modes.TRAIN


def _top(d: Dict[str, float], n: int = 4) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in list(d.items())[:n]) + (f" (+{len(d) - n} more)" if len(d) > n else "")


def _needs(collection_names: Optional[List[str]], tensor_regex: Optional[List[str]]) -> Tuple[Need, ...]:
    """What a rule given these selection parameters reads (nothing known for a regex)."""
    return () if tensor_regex else tuple(Need(c) for c in collection_names or ())


class _GradientRule(Rule):
    """Shared: which gradient tensors a rule reads at a step."""

    def __init__(self, collection_names="gradients", tensor_regex=None) -> None:
        super().__init__()
        self.collection_names = _names(collection_names)
        self.tensor_regex = _names(tensor_regex)

    def requirements(self) -> Tuple[Need, ...]:
        return _needs(self.collection_names or ["gradients"], self.tensor_regex)

    def gradient_names(self, trial, step: int) -> List[str]:
        return self.select(trial, step, self.collection_names, self.tensor_regex, default_collections=["gradients"])


class GradientSNR(_GradientRule):
    """Fires when a layer's gradient signal-to-noise ratio over the last `window` train steps,
    the mean over elements of |mean_t g| / std_t g, is below `min_snr`: the step direction is
    mostly minibatch noise (batch too small, or lr too high for this phase of training)."""

    name = "gradient_snr"

    def __init__(self, window: int = 10, min_snr: float = 0.5, collection_names="gradients", tensor_regex=None) -> None:
        super().__init__(collection_names, tensor_regex)
        self.window = int(window)
        self.min_snr = float(min_snr)
        if self.window < 3:
            raise tt.ConfigError("gradient_snr: window must be >= 3 train steps")
        self._hist: Dict[str, Deque[np.ndarray]] = {}

    def invoke_at_step(self, trial, step: int):
        if not _train(trial, step):
            return RuleResult(self.name, step, False, "skipped: not a train step", skipped=True)
        snr, names = {}, self.gradient_names(trial, step)
        if not names:
            return self.skip(step, self.nothing_to_check(trial, step))
        for n in names:
            h = self._hist.setdefault(n, deque(maxlen=self.window))
            h.append(np.asarray(trial.tensor(n).value(step), np.float64).ravel())
            if len(h) == self.window:
                g = np.stack(h)
                snr[n] = float(np.mean(np.abs(g.mean(0)) / (g.std(0) + 1e-12)))
        if not snr:
            return RuleResult(self.name, step, False, f"skipped: fewer than {self.window} train steps", skipped=True)
        low = {n: v for n, v in sorted(snr.items(), key=lambda kv: kv[1]) if v < self.min_snr}
        if low:
            return RuleResult(self.name, step, True, f"gradient SNR below {self.min_snr:g} over {self.window} steps: "
                              f"{_top(low)}", {"snr": snr})
        return RuleResult(self.name, step, False, f"lowest gradient SNR {min(snr.values()):.3g}", {"snr": snr})


class GradientNormSpike(_GradientRule):
    """Fires when a gradient's L2 norm exceeds `factor` times the median of its previous
    `window` norms (after `min_history` of them): a bad batch, or a loss spike starting."""

    name = "gradient_norm_spike"

    def __init__(self, window: int = 20, factor: float = 10.0, min_history: int = 5,
                 collection_names="gradients", tensor_regex=None) -> None:
        super().__init__(collection_names, tensor_regex)
        self.window, self.factor, self.min_history = int(window), float(factor), int(min_history)
        self._norms: Dict[str, Deque[float]] = {}

    def invoke_at_step(self, trial, step: int):
        spikes, seen, names = {}, 0, self.gradient_names(trial, step)
        if not names:
            return self.skip(step, self.nothing_to_check(trial, step))
        for n in names:
            norm = float(np.linalg.norm(np.asarray(trial.tensor(n).value(step), np.float64)))
            h = self._norms.setdefault(n, deque(maxlen=self.window))
            if len(h) >= self.min_history:
                seen += 1
                med = float(np.median(h))
                if norm > self.factor * med:
                    spikes[n] = norm / med if med > 0 else float("inf")
            h.append(norm)
        if spikes:
            return RuleResult(self.name, step, True, f"gradient norm jumped above {self.factor:g}x its recent median: "
                              f"{_top(spikes)} (x median)", {"ratio_to_median": spikes})
        if not seen:
            return RuleResult(self.name, step, False, "skipped: not enough history yet", skipped=True)
        return RuleResult(self.name, step, False, f"{seen} gradient norms within {self.factor:g}x of their median")


class UpdateSizeTrend(Rule):
    """Fires when the relative update |w_t - w_(t-1)| / |w_(t-1)| of a weight tensor grew by more
    than `growth` times between the start and the end of the last `window` train steps."""

    name = "update_size_trend"

    def __init__(self, window: int = 10, growth: float = 10.0, collection_names="weights", tensor_regex=None) -> None:
        super().__init__()
        self.window, self.growth = int(window), float(growth)
        self.collection_names, self.tensor_regex = _names(collection_names), _names(tensor_regex)
        self._prev: Dict[str, np.ndarray] = {}
        self._ratios: Dict[str, Deque[float]] = {}

    def requirements(self) -> Tuple[Need, ...]:
        return _needs(self.collection_names or ["weights"], self.tensor_regex)

    def invoke_at_step(self, trial, step: int):
        if not _train(trial, step):
            return RuleResult(self.name, step, False, "skipped: not a train step", skipped=True)
        grown, full = {}, 0
        names = self.select(trial, step, self.collection_names, self.tensor_regex, default_collections=["weights"])
        if not names:
            return self.skip(step, self.nothing_to_check(trial, step))
        for n in names:
            w = np.asarray(trial.tensor(n).value(step), np.float64)
            prev, self._prev[n] = self._prev.get(n), w
            if prev is None or prev.shape != w.shape:
                continue
            h = self._ratios.setdefault(n, deque(maxlen=self.window))
            h.append(float(np.linalg.norm(w - prev) / (np.linalg.norm(prev) + 1e-12)))
            if len(h) == self.window:
                full += 1
                first = float(np.mean(list(h)[:3]))
                last = float(np.mean(list(h)[-3:]))
                if first > 0 and last > self.growth * first:
                    grown[n] = last / first
        if grown:
            return RuleResult(self.name, step, True, f"relative update size grew more than {self.growth:g}x in "
                              f"{self.window} steps: {_top(grown)}", {"growth": grown})
        if not full:
            return RuleResult(self.name, step, False, f"skipped: fewer than {self.window} updates", skipped=True)
        return RuleResult(self.name, step, False, f"update sizes steady in {full} tensors")
