"""The built-in visualizers, registered as a plugin."""
from __future__ import annotations

from ..hookspecs import hookimpl

BUILTIN_VISUALIZERS: list = []


@hookimpl
def tensortap_register_visualizers():
    return list(BUILTIN_VISUALIZERS)
