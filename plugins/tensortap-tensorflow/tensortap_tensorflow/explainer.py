"""tt.explain for Keras models: Grad-CAM's activations and gradients (gradcam.py) and the attention
maps of keras.layers.MultiHeadAttention layers (attention.py), computed on demand without a Hook."""
from __future__ import annotations

from typing import Any

import numpy as np
from tensortap.explain import Explainer


class TensorFlowExplainer(Explainer):
    """The tensorflow plugin's Explainer (found by tt.explain.gradcam / tt.explain.attention)."""

    name = "tensorflow"
    attention_support = "keras.layers.MultiHeadAttention layers"

    def gradcam_tensors(self, model: Any, inputs: Any, target_layer: Any,
                        targets: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
        from .gradcam import gradcam_tensors

        return gradcam_tensors(model, inputs, target_layer, targets)

    def attention(self, model: Any, *inputs: Any) -> list[np.ndarray]:
        from .attention import collect_attention

        return collect_attention(model, *inputs)
