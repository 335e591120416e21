"""The built-in visualizers, registered as a plugin."""
from __future__ import annotations

from ..hookspecs import hookimpl
from .attention import AttentionVisualizer
from .distributions import DistributionsVisualizer
from .embedding import EmbeddingVisualizer
from .gradcam import GradCAMVisualizer
from .scalars import ScalarsVisualizer

# (tensortap.vis.pruning.PruningVisualizer is registered by the pruning plugin that names its scalars)
BUILTIN_VISUALIZERS: list = [
    ScalarsVisualizer, DistributionsVisualizer, GradCAMVisualizer, AttentionVisualizer, EmbeddingVisualizer,
]


@hookimpl
def tensortap_register_visualizers():
    return list(BUILTIN_VISUALIZERS)
