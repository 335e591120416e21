"""Visualizers by name: `tt.vis.list()`, `tt.vis.get("gradcam")`."""
from __future__ import annotations

import builtins
from typing import Type

from .. import plugins
from .base import Visualizer

plugins.add_table(plugins.Table("visualizers", "tensortap_register_visualizers", Visualizer, "tensortap.vis.Visualizer",
                                classes=True), builtins=("tensortap.vis.builtin",))


def list() -> builtins.list[str]:  # mirrors the documented tt.vis.list()
    """Names of every registered visualizer, built-in or plugin."""
    return sorted(plugins.get_registry().visualizers)


def get(name: str) -> Type[Visualizer]:
    """The Visualizer class registered under `name` (a clear error with suggestions otherwise)."""
    cls: Type[Visualizer] = plugins.get_registry().get("visualizers", name)
    return cls


__all__ = ["Visualizer", "get", "list"]
