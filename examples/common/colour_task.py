"""The BERT demos' generated task: a sentence of filler words holds one colour word, the label is
that colour; and how much [CLS] attends to that word."""
from __future__ import annotations

import numpy as np

COLOURS = ("red", "green", "blue")
FILLER = ("the", "a", "car", "road", "sign", "turns", "left", "right", "stops", "near", "old", "new", "big",
          "small", "house", "tree", "river", "city", "light", "slow", "fast", "on", "at", "by", "with", "door",
          "wall", "bird", "cat", "dog", "runs", "sits", "over", "under", "and", "then")


def cls_attention_on_colour(trial, layer: str, pos: np.ndarray, valid: np.ndarray) -> dict:
    """Attention of [CLS] (query 0) on the colour word (key `pos[b]`), mean over heads and probe
    sentences, at the first and last capture of `layer`, next to what a uniform spread over each
    sentence's `valid` tokens would give."""
    t = trial.tensor(layer)
    steps = t.steps()

    def at(step: int) -> float:
        a = t.value(step)  # (batch, heads, query, key)
        return float(np.mean([a[b, :, 0, pos[b]].mean() for b in range(len(pos))]))

    return {"first": at(steps[0]), "last": at(steps[-1]), "uniform": float(np.mean(1 / np.asarray(valid))),
            "steps": [int(steps[0]), int(steps[-1])]}
