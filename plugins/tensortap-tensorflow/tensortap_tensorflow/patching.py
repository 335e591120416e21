"""Removable instance-level method patches (Keras 3 has no forward hooks).

A patch sets an attribute on the instance (bypassing Keras' attribute tracking) and its
handle restores exactly what was there before: the class method, or an earlier instance patch.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from tensortap.adapter import Handle
from tensortap.capture import is_quiet, quiet  # noqa: F401 - the one quiet context, for this plugin's modules

_MISSING = object()


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
