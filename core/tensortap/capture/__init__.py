"""The capture interface between the core and framework plugins, and the engine behind it.

A framework adapter uses only what this package exports: the `Capture` protocol its `session`
satisfies (steps, selection, capture, errors, layers, tokens), the `Deferred` protocol of
reduction handles it may return, and the `quiet()` context (with `is_quiet()`) under which its
callbacks stay silent while tensortap itself runs the model. The modules behind it: steps.py
(the step state machine), selection.py (collections x save configs -> per-tensor plans),
buffer.py (the step buffer and deferred reductions), items.py (numpy copies, reduction groups),
errors.py (throttled error reporting) and session.py (CaptureSession, wiring them together).
"""
from .interface import Capture, CaptureItem, Deferred, ModeArg
from .quiet import is_quiet, quiet

__all__ = ["Capture", "CaptureItem", "Deferred", "ModeArg", "is_quiet", "quiet"]
