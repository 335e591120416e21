"""A generated traffic-sign-like data set: coloured sign shapes with symbols on cluttered backgrounds.

Six classes, each a shape + colour + symbol, placed at a random position and size over a
background of random coloured blocks, stripes and noise that reuse the signs' colours (so the
colour alone does not give the class away: a model must find the sign). numpy only, seeded.
"""
from __future__ import annotations

import numpy as np

CLASSES = ("stop", "yield", "warning", "no_entry", "ahead_only", "priority")
RED, WHITE, BLUE = (0.85, 0.1, 0.1), (0.95, 0.95, 0.95), (0.1, 0.25, 0.8)
YELLOW, BLACK = (0.95, 0.8, 0.1), (0.05, 0.05, 0.05)


def _poly(u: np.ndarray, v: np.ndarray, n: int, rot: float) -> np.ndarray:
    """Inside a regular n-gon of circumradius 1 (u, v centred coordinates)."""
    inside = np.ones(u.shape, bool)
    apothem = np.cos(np.pi / n)
    for k in range(n):
        a = rot + 2 * np.pi * (k + 0.5) / n
        inside &= u * np.cos(a) + v * np.sin(a) <= apothem
    return inside


def _sign(cls: int, u: np.ndarray, v: np.ndarray):
    """Layers (mask, colour) of sign `cls` in centred coordinates scaled to radius 1."""
    r = np.hypot(u, v)
    if cls == 0:  # stop: red octagon, white bar
        return [(_poly(u, v, 8, np.pi / 8), RED), ((np.abs(v) < 0.16) & (np.abs(u) < 0.6), WHITE)]
    if cls == 1:  # yield: downward triangle, red border, white inside
        return [(_poly(u, v, 3, np.pi / 2), RED), (_poly(u / 0.62, (v + 0.1) / 0.62, 3, np.pi / 2), WHITE)]
    if cls == 2:  # warning: upward triangle, red border, white inside, black "!"
        return [(_poly(u, v, 3, -np.pi / 2), RED), (_poly(u / 0.62, (v - 0.1) / 0.62, 3, -np.pi / 2), WHITE),
                ((np.abs(u) < 0.08) & (v > -0.15) & (v < 0.3), BLACK), (np.hypot(u, v + 0.32) < 0.09, BLACK)]
    if cls == 3:  # no entry: red disc, white horizontal bar
        return [(r < 1, RED), ((np.abs(v) < 0.18) & (np.abs(u) < 0.7), WHITE)]
    if cls == 4:  # ahead only: blue disc, white up arrow
        shaft = (np.abs(u) < 0.12) & (v > -0.2) & (v < 0.6)
        head = (v <= -0.15) & (v > -0.65) & (np.abs(u) < (v + 0.65) * 0.9)
        return [(r < 1, BLUE), (shaft | head, WHITE)]
    # priority: yellow diamond with a white border
    d = np.abs(u) + np.abs(v)
    return [(d < 1, WHITE), (d < 0.78, YELLOW)]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    img = np.ones((size, size, 3)) * rng.uniform(0.2, 0.8, size=3)
    palette = [RED, WHITE, BLUE, YELLOW, BLACK, (0.2, 0.6, 0.2), (0.5, 0.5, 0.5)]
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(3, 7)):
        c = palette[rng.integers(len(palette))]
        kind = rng.integers(3)
        if kind == 0:    # block
            y0, x0 = rng.integers(0, size, 2)
            h, w = rng.integers(3, size // 2, 2)
            img[y0:y0 + h, x0:x0 + w] = c
        elif kind == 1:  # stripe
            a = rng.uniform(0, np.pi)
            off = rng.uniform(-size / 2, size / 2)
            m = np.abs((xx - size / 2) * np.cos(a) + (yy - size / 2) * np.sin(a) - off) < rng.uniform(1, 3)
            img[m] = c
        else:            # blob
            cy, cx = rng.uniform(0, size, 2)
            m = np.hypot(yy - cy, xx - cx) < rng.uniform(2, size / 5)
            img[m] = c
    return img


def make_signs(n: int, size: int = 32, seed: int = 0, masks: bool = False):
    """(images (n, size, size, 3) float32 in [0, 1], labels (n,) int64), classes balanced; with
    masks=True also (n, size, size) float32: the share of each pixel the sign covers."""
    rng = np.random.default_rng(seed)
    ss = 2  # supersampling for smooth edges
    big = size * ss
    yy, xx = np.mgrid[:big, :big].astype(np.float64)
    xs = np.empty((n, size, size, 3), np.float32)
    ms = np.empty((n, size, size), np.float32)
    ys = np.arange(n) % len(CLASSES)
    rng.shuffle(ys)
    for i in range(n):
        img = np.kron(_background(rng, size), np.ones((ss, ss, 1)))
        rad = rng.uniform(0.22, 0.36) * big
        cy, cx = rng.uniform(rad, big - rad, 2)
        u, v = (xx - cx) / rad, (yy - cy) / rad
        layers = _sign(int(ys[i]), u, v)
        for mask, colour in layers:
            img[mask] = colour
        ms[i] = layers[0][0].reshape(size, ss, size, ss).mean(axis=(1, 3))
        img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
        img *= rng.uniform(0.75, 1.15)  # lighting
        img += rng.normal(0, 0.04, img.shape)
        xs[i] = np.clip(img, 0, 1)
    return (xs, ys.astype(np.int64), ms) if masks else (xs, ys.astype(np.int64))
