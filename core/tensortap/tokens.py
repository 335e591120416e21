"""Token strings as stored beside attention (attention/tokens): a fixed-width unicode array."""
from __future__ import annotations

from typing import Any

import numpy as np


def token_array(tokens: Any) -> np.ndarray:
    """(seq,) for one sequence of strings, (batch, seq) for several (shorter ones padded with "")."""
    if isinstance(tokens, np.ndarray):
        return tokens.astype(str)
    rows = list(tokens)
    if rows and all(isinstance(t, str) for t in rows):
        return np.asarray(rows, dtype=str)
    rows = [list(map(str, r)) for r in rows]
    width = max((len(r) for r in rows), default=0)
    return np.asarray([r + [""] * (width - len(r)) for r in rows], dtype=str)
