"""Visualizers by name: `tt.vis.list()`, `tt.vis.get("gradcam")`."""
from __future__ import annotations

from typing import List

from .base import Visualizer


def list() -> List[str]:  # noqa: A001
    from ..plugins import get_registry

    return sorted(get_registry().visualizers)


def get(name: str) -> type:
    from ..plugins import get_registry

    return get_registry().get("visualizers", name)


__all__ = ["Visualizer", "list", "get"]
