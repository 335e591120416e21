"""tt.explain for torch models: Grad-CAM's activations and gradients (gradcam.py) and the attention
maps of nn.MultiheadAttention modules (attention.py), computed on demand without a Hook."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensortap.explain import Explainer

from . import gradcam as _gradcam
from .attention import AttentionTap
from .convert import to_numpy
from .util import eval_mode, quiet, unwrap


class TorchExplainer(Explainer):
    """The torch plugin's Explainer (found by tt.explain.gradcam / tt.explain.attention)."""

    name = "torch"
    attention_support = ("torch.nn.MultiheadAttention modules (also inside nn.TransformerEncoderLayer) and the "
                         "self-attention of Hugging Face transformers models (BERT, RoBERTa, DistilBERT, GPT-2, ViT, "
                         "...)")

    def gradcam_tensors(self, model: Any, inputs: Any, target_layer: Any,
                        targets: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
        acts, grads, size, tgt, _ = _gradcam.run(model, inputs, target_layer, targets)
        return acts, grads, size, tgt

    def attention(self, model: Any, *inputs: Any, **kw_inputs: Any) -> list[np.ndarray]:
        """Attention probabilities of every attention module, in call order; the model runs once
        under no_grad in eval mode (flags restored), so BatchNorm statistics and .grad stay put."""
        root = unwrap(model)
        found: list[np.ndarray] = []

        def fail(what: str, exc: BaseException) -> None:
            raise exc

        handles = AttentionTap(lambda n, p: found.append(to_numpy(p)), lambda n: True, fail).attach(root)
        try:
            with quiet(), eval_mode(root), torch.no_grad():
                root(*inputs, **kw_inputs)
        finally:
            for h in reversed(handles):
                h.remove()
        return found
