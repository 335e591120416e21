"""Rules over data, labels and predictions: class_imbalance, confusion, check_input_images,
nlp_sequence_ratio."""
from __future__ import annotations

import re
from typing import Dict, Optional

import numpy as np

from ..base import Rule
from ..requirements import Need, Needs
from ._common import activations, ConfigError, as_bool, as_list, listing, no_match, result, value
from .gradients import skipped

SAVE_LABELS = ("save them at each step with hook.save_tensor('labels', y, collections=['labels']) and "
               "hook.save_tensor('predictions', logits_or_ids, collections=['predictions'])")


def _labels(arr: np.ndarray, argmax: bool) -> np.ndarray:
    if argmax or (arr.ndim >= 2 and arr.shape[-1] > 1 and arr.dtype.kind == "f"):
        arr = np.argmax(arr, axis=-1)
    return np.asarray(arr).reshape(-1).astype(np.int64)


def _pair(trial, step: int, labels_regex, predictions_regex, argmax: bool):
    ln = trial.tensor_names(regex=labels_regex, step=step)
    pn = trial.tensor_names(regex=predictions_regex, step=step) if predictions_regex else []
    if not ln:
        return None, None
    y = _labels(value(trial, ln[0], step), False)
    p = _labels(value(trial, pn[0], step), argmax) if pn else None
    if p is not None and p.shape != y.shape:
        raise ConfigError(f"labels {ln[0]!r} {y.shape} and predictions {pn[0]!r} {p.shape} differ in size")
    return y, p


class ClassImbalance(Rule):
    """After `samples` labels (accumulated over steps), fires when the largest class has more
    than `threshold_imbalance` times the samples of the smallest, or when a class's share of
    mispredictions exceeds `threshold_misprediction`.

    Labels/predictions: the first tensor matching labels_regex / predictions_regex at a step;
    predictions that are per-class scores (float, last axis > 1) are argmax-ed, or always with argmax=True."""

    name = "class_imbalance"
    needs = (Need("labels", what="labels"),)

    def __init__(self, threshold_imbalance: float = 10.0, threshold_misprediction: float = 0.7, samples: int = 500,
                 argmax: bool = False, labels_regex: str = ".*labels",
                 predictions_regex: str = ".*predictions") -> None:
        super().__init__()
        self.threshold_imbalance = float(threshold_imbalance)
        self.threshold_misprediction = float(threshold_misprediction)
        self.samples = int(samples)
        self.argmax = as_bool(argmax)
        self.labels_regex, self.predictions_regex = labels_regex, predictions_regex
        self._count: Dict[int, int] = {}
        self._wrong: Dict[int, int] = {}
        self._seen_pred: Dict[int, int] = {}

    def invoke_at_step(self, trial, step: int):
        y, p = _pair(trial, step, self.labels_regex, self.predictions_regex, self.argmax)
        if y is None:
            return skipped(self, step, f"no labels at this step (a tensor matching {self.labels_regex!r}): "
                           f"{SAVE_LABELS}")
        for c, k in zip(*np.unique(y, return_counts=True)):
            self._count[int(c)] = self._count.get(int(c), 0) + int(k)
        if p is not None:
            for c in np.unique(y):
                sel = y == c
                self._seen_pred[int(c)] = self._seen_pred.get(int(c), 0) + int(sel.sum())
                self._wrong[int(c)] = self._wrong.get(int(c), 0) + int((p[sel] != c).sum())
        n = sum(self._count.values())
        if n < self.samples:
            return skipped(self, step, f"{n} of {self.samples} labels seen")
        counts = self._count
        ratio = max(counts.values()) / min(counts.values())
        wrong = {c: self._wrong[c] / self._seen_pred[c] for c in self._seen_pred if self._seen_pred[c]}
        bad_pred = {f"class {c}": w for c, w in wrong.items() if w > self.threshold_misprediction}
        vals = {"counts": dict(counts), "imbalance": ratio, "misprediction": wrong}
        why = []
        if ratio > self.threshold_imbalance:
            big, small = max(counts, key=lambda c: counts[c]), min(counts, key=lambda c: counts[c])
            why.append(f"class {big} has {ratio:.3g}x the samples of class {small} "
                       f"({counts[big]} vs {counts[small]}; threshold {self.threshold_imbalance:g})")
        if bad_pred:
            why.append(f"misprediction share above {self.threshold_misprediction:g}: {listing(bad_pred)}")
        if why:
            return result(self, step, True, "; ".join(why), vals)
        return result(self, step, False, f"class ratio {ratio:.3g} over {n} labels", vals)


class Confusion(Rule):
    """Fires when, in the confusion matrix of one step's labels and predictions, a class's recall
    (diagonal / its row) is below `min_diag`, or one off-diagonal cell of a row exceeds
    `max_off_diag` of that row.

    Tensors: named `labels` / `predictions`, else the first tensor of labels_collection /
    predictions_collection. Integer class ids; score arrays are argmax-ed."""

    name = "confusion"
    needs = (Need("labels", what="labels and predictions"),)

    def __init__(self, category_no: Optional[int] = None, labels: str = "labels", predictions: str = "predictions",
                 labels_collection: str = "labels", predictions_collection: str = "predictions",
                 min_diag: float = 0.9, max_off_diag: float = 0.1) -> None:
        super().__init__()
        self.category_no = None if category_no in (None, "None", "") else int(category_no)
        self.labels, self.predictions = labels, predictions
        self.labels_collection, self.predictions_collection = labels_collection, predictions_collection
        self.min_diag, self.max_off_diag = float(min_diag), float(max_off_diag)

    def _find(self, trial, step: int, name: str, coll: str) -> Optional[str]:
        if trial.has_tensor(name) and trial.tensor_names(regex=f"^{re.escape(name)}$", step=step):
            return name
        in_coll = trial.tensor_names(collection=coll, step=step)
        return in_coll[0] if in_coll else None

    def invoke_at_step(self, trial, step: int):
        ln = self._find(trial, step, self.labels, self.labels_collection)
        pn = self._find(trial, step, self.predictions, self.predictions_collection)
        if ln is None or pn is None:
            missing = " and ".join(w for w, n in (("labels", ln), ("predictions", pn)) if n is None)
            return skipped(self, step, f"no {missing} at this step (tensors named {self.labels!r} / "
                           f"{self.predictions!r} or in collections {self.labels_collection!r} / "
                           f"{self.predictions_collection!r}): {SAVE_LABELS}")
        y, p = _labels(value(trial, ln, step), False), _labels(value(trial, pn, step), False)
        k = self.category_no or int(max(y.max(initial=0), p.max(initial=0)) + 1)
        cm = np.zeros((k, k), np.int64)
        np.add.at(cm, (np.clip(y, 0, k - 1), np.clip(p, 0, k - 1)), 1)
        rows = cm.sum(axis=1)
        present = rows > 0
        recall = {f"class {i}": float(cm[i, i] / rows[i]) for i in range(k) if present[i]}
        off = cm / np.maximum(rows[:, None], 1)
        np.fill_diagonal(off, 0)
        low = {c: r for c, r in recall.items() if r < self.min_diag}
        worst = np.unravel_index(int(np.argmax(off)), off.shape)
        vals = {"matrix": cm, "recall": recall, "max_off_diag": float(off[worst])}
        why = []
        if low:
            why.append(f"recall below {self.min_diag:g}: {listing(low)}")
        if off[worst] > self.max_off_diag:
            why.append(f"{off[worst]:.1%} of class {worst[0]} predicted as class {worst[1]} "
                       f"(> {self.max_off_diag:.1%})")
        if why:
            return result(self, step, True, "; ".join(why), vals)
        return result(self, step, False, f"confusion fine over {int(rows.sum())} samples", vals)


class CheckInputImages(Rule):
    """After `threshold_samples` images (accumulated over steps), fires when the mean of an image
    channel is farther than `threshold_mean` from 0: the inputs are not normalised.

    Images: 4-D tensors matching `regex` whose `channel` axis has 1, 3 or 4 channels (so a
    network's first layer input qualifies, deeper feature maps do not)."""

    name = "check_input_images"
    needs = (Need("inputs", what="image batches (the input of the first layer)"),)

    def __init__(self, threshold_mean: float = 0.2, threshold_samples: int = 500, regex: str = r".*/input_0",
                 channel: int = 1) -> None:
        super().__init__()
        self.threshold_mean = float(threshold_mean)
        self.threshold_samples = int(threshold_samples)
        self.regex = as_list(regex)
        self.channel = int(channel)
        self._sum: Dict[str, np.ndarray] = {}
        self._n: Dict[str, int] = {}
        self._pix: Dict[str, int] = {}

    def invoke_at_step(self, trial, step: int):
        found = []
        for n in activations(trial.tensor_names(regex=self.regex, step=step)):
            x = value(trial, n, step)
            if x.ndim != 4 or x.dtype.kind not in "fiu" or x.shape[self.channel] not in (1, 3, 4):
                continue
            x = np.moveaxis(x.astype(np.float64), self.channel, 1)
            self._sum[n] = self._sum.get(n, 0) + x.sum(axis=(0, 2, 3))
            self._n[n] = self._n.get(n, 0) + x.shape[0]
            self._pix[n] = self._pix.get(n, 0) + x.shape[0] * x.shape[2] * x.shape[3]
            found.append(n)
        if not found:
            return skipped(self, step, f"no image batch at this step: no 4-D tensor matching {self.regex} with 1, 3 "
                           f"or 4 channels on axis {self.channel}" + ("" if trial.tensor_names(collection="inputs")
                                                                     else "; add 'inputs' to include_collections"))
        means = {n: self._sum[n] / self._pix[n] for n in self._n if self._n[n] >= self.threshold_samples}
        if not means:
            return skipped(self, step, f"{max(self._n.values())} of {self.threshold_samples} images seen")
        bad = {f"{n}[c{c}]": float(m[c]) for n, m in means.items() for c in range(len(m))
               if abs(m[c]) > self.threshold_mean}
        vals = {"channel_means": {n: m.tolist() for n, m in means.items()}}
        if bad:
            return result(self, step, True, "input images not normalised: channel mean beyond "
                          f"±{self.threshold_mean:g}: {listing(bad)}", vals)
        return result(self, step, False, "input channel means near 0", vals)


class NlpSequenceRatio(Rule):
    """Fires when the share of a given token id (e.g. padding 0, unknown) among the token ids fed
    to an embedding exceeds its threshold percentage.

    token_values and token_thresholds_percent are comma-separated and paired in order; a single
    threshold applies to every token. Embeddings: by the layer classes the run records, or by names
    matching ".*embedding.*/input_N" where it records none; tensor_regex replaces both."""

    name = "nlp_sequence_ratio"
    needs = (Need("inputs", ("embedding",)),)

    def __init__(self, tensor_regex: Optional[str] = None, token_values: str = "0",
                 token_thresholds_percent: str = "50") -> None:
        super().__init__()
        self.tensor_regex = as_list(tensor_regex)
        self.tokens = [int(float(t)) for t in as_list(str(token_values) if not isinstance(token_values, (list, tuple))
                                                      else token_values) or []]
        th = [float(t) for t in as_list(str(token_thresholds_percent) if not isinstance(
            token_thresholds_percent, (list, tuple)) else token_thresholds_percent) or []]
        if not self.tokens:
            raise ConfigError("nlp_sequence_ratio: token_values is empty")
        if len(th) == 1:
            th = th * len(self.tokens)
        if len(th) != len(self.tokens):
            raise ConfigError(f"nlp_sequence_ratio: {len(self.tokens)} token_values but {len(th)} "
                              "token_thresholds_percent; give one threshold per token, or one for all")
        self.thresholds = th

    def requirements(self) -> Needs:
        return () if self.tensor_regex else self.needs

    def invoke_at_step(self, trial, step: int):
        if self.tensor_regex:
            names = activations(trial.tensor_names(regex=self.tensor_regex, step=step))
        else:
            names = self.select_layers(trial, step, "embedding", "input", name_regex=r".*embedding.*/input_\d+")
        if not names:
            return self.skip(step, no_match(self.tensor_regex) if self.tensor_regex
                             else self.nothing_to_check(trial, step))
        shares: Dict[str, float] = {}
        bad: Dict[str, float] = {}
        for n in names:
            x = value(trial, n, step)
            if x.dtype.kind not in "iu" or not x.size:
                continue
            for tok, th in zip(self.tokens, self.thresholds):
                share = float(np.count_nonzero(x == tok) * 100.0 / x.size)
                shares[f"{n}[{tok}]"] = share
                if share > th:
                    bad[f"token {tok} in {n}"] = share
        if not shares:
            return skipped(self, step, f"none of the {len(names)} embedding inputs at this step holds integer "
                           "token ids")
        if bad:
            return result(self, step, True, "token share above threshold: " + listing(bad, fmt="{:.1f}%"),
                          {"percent": shares})
        return result(self, step, False, "token shares: " + listing(shares, fmt="{:.1f}%"), {"percent": shares})
