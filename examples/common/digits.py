"""scikit-learn's bundled handwritten digits (1,797 8x8 images), upsampled and split. No download."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def load_digits_images(size: int = 24, seed: int = 0, test_fraction: float = 0.3,
                       shift: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float32 images (N, 1, size, size) in [0, 1], int64 labels,
    a stratified split. `shift` > 0 pads and randomly translates each image by up to that many pixels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    rep = max(1, size // 8)
    x = np.kron(x, np.ones((rep, rep), dtype=np.float32))  # nearest upsample, exact
    if x.shape[-1] != size:
        pad = size - x.shape[-1]
        x = np.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))
    if shift:
        rng = np.random.default_rng(seed)
        out = np.zeros_like(x)
        for i in range(len(x)):
            dy, dx = rng.integers(-shift, shift + 1, size=2)
            out[i] = np.roll(np.roll(x[i], dy, axis=0), dx, axis=1)
        x = out
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x[:, None], y, test_size=test_fraction, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte
