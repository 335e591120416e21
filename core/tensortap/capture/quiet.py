"""The quiet context: while tensortap itself runs a model (Grad-CAM, attention maps, a score
recomputed for a rule), the training hooks of every framework adapter stay silent on that thread:
no step is counted, nothing is captured.

One thread-local depth for all adapters; `is_quiet()` is on every framework callback's path, so
it is a single attribute read (the class default makes a thread's first read raise nothing).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator


class _Depth(threading.local):
    depth = 0  # per thread: how many quiet() blocks are open


_state = _Depth()


def is_quiet() -> bool:
    """True inside `quiet()` on this thread: a framework callback returns at once."""
    return _state.depth > 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Run tensortap's own forward passes without the training hooks counting steps or capturing."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
