"""The built-in visualizers, registered as a plugin."""
from __future__ import annotations

from ..hookspecs import hookimpl
from .attention import AttentionVisualizer
from .distributions import DistributionsVisualizer
from .embedding import EmbeddingVisualizer
from .gradcam import GradCAMVisualizer
from .pruning import PruningVisualizer
from .scalars import ScalarsVisualizer

BUILTIN_VISUALIZERS: list = [
    ScalarsVisualizer, DistributionsVisualizer, GradCAMVisualizer, AttentionVisualizer, EmbeddingVisualizer,
    PruningVisualizer,
]


@hookimpl
def tensortap_register_visualizers():
    return list(BUILTIN_VISUALIZERS)
