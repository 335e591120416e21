"""tt.explain for Gluon models: Grad-CAM's activations and gradients (gradcam.py) and the attention
maps of a gluonnlp BERT model (attention.py), computed on demand without a Hook."""
from __future__ import annotations

from typing import Any

import numpy as np
from tensortap.explain import Explainer


class MXNetExplainer(Explainer):
    """The mxnet plugin's Explainer (found by tt.explain.gradcam / tt.explain.attention)."""

    name = "mxnet"
    attention_support = ("gluonnlp 0.10 BERT self-attention (DotProductSelfAttentionCell) in gluonnlp.model.BERTModel "
                         "or a model containing one, e.g. BERTClassifier")

    def gradcam_tensors(self, model: Any, inputs: Any, target_layer: Any,
                        targets: Any = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
        from .gradcam import gradcam_tensors

        return gradcam_tensors(model, inputs, target_layer, targets)

    def attention(self, model: Any, *inputs: Any) -> list[np.ndarray]:
        """Attention probabilities per layer of a gluonnlp BERT model, (batch, heads, query, key)."""
        from .attention import compute

        return compute(model, inputs)
