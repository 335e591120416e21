"""Gradients at the moment they are final: just before a Gluon Trainer uses them.

`Trainer.step`, `Trainer.allreduce_grads` and `Trainer.update` are wrapped (at class level,
once, while at least one MXNetAdapter is attached; removed with the last one). The wrapper
first lets every attached adapter whose model shares parameters with that trainer copy the
gradients, then calls the original method. So `gradients/<name>` is exactly what `backward()`
produced (before allreduce, `rescale_grad` and the update), whatever trainer object the user made:
no registration call is needed.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, List

_METHODS = ("step", "allreduce_grads", "update")
_lock = threading.Lock()
_listeners: List[Any] = []
_originals: dict = {}


def _wrap(orig):
    @functools.wraps(orig)
    def wrapper(self, *args, **kwargs):
        for listener in list(_listeners):
            listener._before_trainer_update(self)
        return orig(self, *args, **kwargs)

    wrapper.__tensortap_original__ = orig
    return wrapper


def add_listener(adapter: Any) -> None:
    """Start calling `adapter._before_trainer_update(trainer)` before every trainer update."""
    from mxnet.gluon import Trainer

    with _lock:
        if adapter not in _listeners:
            _listeners.append(adapter)
        if not _originals:
            for m in _METHODS:
                orig = Trainer.__dict__[m]
                _originals[m] = orig
                setattr(Trainer, m, _wrap(orig))


def remove_listener(adapter: Any) -> None:
    """Stop notifying `adapter`; the last one out restores the Trainer's own methods."""
    from mxnet.gluon import Trainer

    with _lock:
        if adapter in _listeners:
            _listeners.remove(adapter)
        if not _listeners and _originals:
            for m, orig in list(_originals.items()):
                current = Trainer.__dict__.get(m)
                if getattr(current, "__tensortap_original__", None) is orig:
                    setattr(Trainer, m, orig)
            _originals.clear()


def owns_any(trainer: Any, param_ids: frozenset) -> bool:
    """Does `trainer` update one of the parameters whose ids are given?"""
    return any(id(p) in param_ids for p in getattr(trainer, "_params", ()))
