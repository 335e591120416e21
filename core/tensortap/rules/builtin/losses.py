"""Rules over losses: loss_not_decreasing, overfit, overtraining."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..base import Rule
from ..outcomes import step_label
from ..requirements import Need, Needs
from ._common import ConfigError, as_bool, as_list, check_mode, listing, mode_of, no_match, result, value
from .gradients import selection_needs, skipped

LOSSES = (Need("losses"),)


def scalar(trial, name: str, step: int) -> float:
    v = value(trial, name, step)
    return float(v.reshape(-1)[0]) if v.size == 1 else float(np.mean(v))


class LossNotDecreasing(Rule):
    """Every `num_steps` steps, fires when a loss is not at least `diff_percent` % below its
    value at the latest saved step at least `num_steps` steps earlier.

    Losses: collection "losses" (use_losses_collection) plus collection_names / tensor_regex.
    mode=None compares each mode with itself (train with train, eval with eval, in that mode's
    own step count); "train"/"eval"/"predict" check that mode only; "global" mixes all steps."""

    name = "loss_not_decreasing"
    collections = ("losses",)
    needs = LOSSES

    def __init__(self, collection_names=None, tensor_regex=None, use_losses_collection: bool = True,
                 num_steps: int = 10, diff_percent: float = 0.0, mode: Optional[str] = None) -> None:
        super().__init__()
        self.collection_names = as_list(collection_names)
        self.tensor_regex = as_list(tensor_regex)
        self.use_losses_collection = as_bool(use_losses_collection)
        self.num_steps = int(num_steps)
        self.diff_percent = float(diff_percent)
        self.mode = check_mode(mode)
        if self.num_steps < 1:
            raise ConfigError("loss_not_decreasing: num_steps must be >= 1")
        if not (0.0 <= self.diff_percent < 100.0):
            raise ConfigError("loss_not_decreasing: diff_percent must be in [0, 100)")
        if not (self.use_losses_collection or self.collection_names or self.tensor_regex):
            raise ConfigError("loss_not_decreasing: with use_losses_collection=False give collection_names or "
                              "tensor_regex")
        # by (loss, mode): (mode step, loss, global step)
        self._hist: Dict[Tuple[str, Optional[str]], List[Tuple[int, float, int]]] = {}
        self._last: Dict[Tuple[str, Optional[str]], int] = {}

    def requirements(self) -> Needs:
        colls = list(self.collection_names or []) + (["losses"] if self.use_losses_collection else [])
        return selection_needs(colls, self.tensor_regex, LOSSES)

    def _names(self, trial, step: int) -> List[str]:
        colls = list(self.collection_names or []) + (["losses"] if self.use_losses_collection else [])
        return self.select(trial, step, colls or None, self.tensor_regex, default_collections=["losses"])

    def invoke_at_step(self, trial, step: int):
        m = mode_of(trial, step)
        if self.mode not in (None, "global") and m != self.mode:
            return skipped(self, step, f"not a {self.mode} step")
        key_mode, k = ("global", step) if self.mode == "global" else (m, trial.mode_step(step))
        names = self._names(trial, step)
        if not names:
            return self.skip(step, self.nothing_to_check(trial, step))
        bad: Dict[str, str] = {}
        checked: Dict[str, Tuple[int, float, float, int]] = {}
        for n in names:
            key = (n, key_mode)
            v = scalar(trial, n, step)
            hist = self._hist.setdefault(key, [])
            hist.append((k, v, step))
            last = self._last.setdefault(key, k)
            if k - last < self.num_steps:
                continue
            before = [h for h in hist if h[0] <= k - self.num_steps]
            if not before:
                continue
            k0, v0, g0 = before[-1]
            self._last[key] = k
            del hist[:len(before) - 1]
            need = v0 - abs(v0) * self.diff_percent / 100.0
            checked[n] = (g0, v0, v, k0)
            if not (v < need if self.diff_percent == 0 else v <= need):
                bad[n] = f"{v0:.4g} at {step_label(trial, g0)} -> {v:.4g} at {step_label(trial, step)}"
        if bad:
            want = "decrease" if self.diff_percent == 0 else f"decrease by {self.diff_percent:g}%"
            over = f"{self.num_steps} steps" if self.mode == "global" else f"{self.num_steps} {m} steps"
            return result(self, step, True, f"loss did not {want} over {over}: {listing(bad)}",
                          {n: {"from_step": c[0], "from_mode_step": c[3], "from": c[1], "to": c[2]}
                           for n, c in checked.items() if n in bad}, checked=len(checked))
        if checked:
            return result(self, step, False, "loss decreased: " + listing(
                {n: f"{c[1]:.4g}->{c[2]:.4g}" for n, c in checked.items()}), checked=len(checked))
        return skipped(self, step, f"not a checking step (each loss is compared with its value {self.num_steps} "
                       f"{'' if self.mode == 'global' else (m or '') + ' '}steps earlier)")


class Overfit(Rule):
    """At each EVAL step from `start_step`, compares the mean validation loss of the current
    evaluation phase with the mean training loss of the latest training phase; fires when
    (val - train) / train exceeds `ratio_threshold` at `patience` consecutive EVAL steps."""

    name = "overfit"
    collections = ("losses",)
    needs = LOSSES

    def __init__(self, tensor_regex=None, start_step: int = 0, patience: int = 1, ratio_threshold: float = 0.1) -> None:
        super().__init__()
        self.tensor_regex = as_list(tensor_regex)
        self.start_step = int(start_step)
        self.patience = int(patience)
        self.ratio_threshold = float(ratio_threshold)
        self._phase: Optional[str] = None
        self._train: List[float] = []      # current (or latest) training phase
        self._val: List[float] = []        # current evaluation phase
        self._over = 0

    def _loss(self, trial, step: int) -> Optional[float]:
        names = trial.tensor_names(collection="losses", regex=self.tensor_regex, step=step) if self.tensor_regex \
            else trial.tensor_names(collection="losses", step=step)
        return float(np.mean([scalar(trial, n, step) for n in names])) if names else None

    def invoke_at_step(self, trial, step: int):
        m = mode_of(trial, step)
        loss = self._loss(trial, step)
        if loss is None:
            return self.skip(step, no_match(self.tensor_regex) if self.tensor_regex
                             else self.nothing_to_check(trial, step))
        if m not in ("train", "eval"):
            return skipped(self, step, f"a {m} step (overfit compares TRAIN with EVAL losses)")
        if m != self._phase:
            if m == "train":
                self._train = []
            else:
                self._val = []
            self._phase = m
        if m == "train":
            self._train.append(loss)
            none = "" if trial.steps(mode="eval") else (
                "; no EVAL step saved so far: evaluate with hook.set_mode(tt.modes.EVAL) (torch: model.eval(); "
                "Keras: validation_data)")
            return skipped(self, step, f"training step (overfit is checked at EVAL steps){none}")
        self._val.append(loss)
        if step < self.start_step or not self._train:
            return skipped(self, step, "before start_step or no training loss yet")
        tr, va = float(np.mean(self._train)), float(np.mean(self._val))
        ratio = (va - tr) / abs(tr) if tr != 0 else float("inf")
        self._over = self._over + 1 if ratio > self.ratio_threshold else 0
        vals = {"train_loss": tr, "val_loss": va, "ratio": ratio, "consecutive": self._over}
        if self._over >= self.patience:
            return result(self, step, True, f"validation loss {va:.4g} exceeds training loss {tr:.4g} by "
                          f"{ratio:.1%} (> {self.ratio_threshold:.1%}) for {self._over} eval steps", vals)
        return result(self, step, False, f"val/train loss gap {ratio:.1%}", vals)


class Overtraining(Rule):
    """Fires when the training loss made no improvement larger than `delta` (absolute) for
    `patience_train` TRAIN steps, or the validation loss for `patience_validation` EVAL steps."""

    name = "overtraining"
    collections = ("losses",)
    needs = LOSSES

    def __init__(self, patience_train: int = 5, patience_validation: int = 10, delta: float = 0.1) -> None:
        super().__init__()
        self.patience = {"train": int(patience_train), "eval": int(patience_validation)}
        self.delta = float(delta)
        self._best: Dict[str, Tuple[float, int]] = {}

    def invoke_at_step(self, trial, step: int):
        m = mode_of(trial, step)
        names = trial.tensor_names(collection="losses", step=step)
        if not names:
            return self.skip(step, self.nothing_to_check(trial, step))
        if m not in self.patience:
            return skipped(self, step, f"a {m} step (overtraining watches TRAIN and EVAL losses)")
        losses = [scalar(trial, n, step) for n in names]
        loss = losses[0] if len(losses) == 1 else float(np.mean(losses))
        best, since = self._best.get(m, (float("inf"), 0))
        if loss < best - self.delta or best == float("inf"):
            best, since = loss, 0
        else:
            since += 1
        self._best[m] = (best, since)
        what = "training" if m == "train" else "validation"
        vals = {"mode": m, "loss": loss, "best": best, "steps_without_improvement": since}
        if since >= self.patience[m]:
            return result(self, step, True, f"{what} loss has not improved by more than {self.delta:g} for {since} "
                          f"{m} steps (best {best:.4g}, now {loss:.4g})", vals)
        return result(self, step, False, f"{what} loss {loss:.4g}, best {best:.4g}", vals)
