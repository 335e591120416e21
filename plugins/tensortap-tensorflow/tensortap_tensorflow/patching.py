"""Removable instance-level method patches (Keras 3 has no forward hooks).

A patch sets an attribute on the instance (bypassing Keras' attribute tracking) and its
handle restores exactly what was there before: the class method, or an earlier instance patch.
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from typing import Any, Callable

from tensortap.adapter import Handle

_MISSING = object()
_local = threading.local()


def patch(obj: Any, attr: str, make: Callable[[Callable], Callable]) -> Handle:
    """Replace obj.attr by make(original) on this instance only; the handle undoes it."""
    before = obj.__dict__.get(attr, _MISSING)
    original = getattr(obj, attr)
    new = make(original)
    try:
        functools.update_wrapper(new, original)
    except (AttributeError, TypeError):
        pass
    new.__tensortap_original__ = original
    object.__setattr__(obj, attr, new)

    def restore() -> None:
        if obj.__dict__.get(attr) is not new:
            return  # someone patched over us: leave theirs in place (ours becomes a pass-through)
        if before is _MISSING:
            object.__delattr__(obj, attr)
        else:
            object.__setattr__(obj, attr, before)

    return Handle(restore)


def is_patched(obj: Any, attr: str) -> bool:
    return hasattr(obj.__dict__.get(attr, None), "__tensortap_original__")


@contextmanager
def quiet():
    """Inside: tensortap's training taps pass through (tt.explain's own forwards, score recomputation)."""
    depth = getattr(_local, "quiet", 0)
    _local.quiet = depth + 1
    try:
        yield
    finally:
        _local.quiet = depth


def is_quiet() -> bool:
    return getattr(_local, "quiet", 0) > 0
