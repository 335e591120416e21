"""Suspend tensortap's own hooks while tensortap itself runs a model (Grad-CAM, attention maps).

An explanation computed during training must not count as a training step of an attached Hook,
nor record anything in it.
"""
from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def suspended() -> bool:
    """True inside `quiet()` on this thread."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def quiet():
    """Within this block, attached MXNetAdapters ignore the model's forward passes."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
