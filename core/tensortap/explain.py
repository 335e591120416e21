"""Explanations computed on demand for any framework: Grad-CAM and attention maps.

A framework plugin's Explainer (named by its AdapterSpec) supplies the activations and gradients
of the class score as numpy, and the attention probabilities; it needs no Hook and captures
nothing. The maths (Selvaraju et al.) lives here once: alpha_k = spatial mean of dy_c/dA^k,
raw = ReLU(sum_k alpha_k A^k) at feature-map size, heatmap = raw upsampled to the input and
scaled to [0, 1] per image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import AttentionNotFound, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .capture.interface import Capture
    from .hook import Hook


class Explainer:
    """What a framework plugin computes for tt.explain, on demand and outside any training step:
    no Hook, nothing captured, the model's modes, parameters and gradients left as they were.
    A plugin subclasses it and names the class in its AdapterSpec (`explainer="pkg.mod:Class"`)."""

    #: the framework's name ("torch")
    name: str = "base"
    #: what `attention` reads, named by AttentionNotFound ("torch.nn.MultiheadAttention modules")
    attention_support: str = ""

    def __init__(self, name: Optional[str] = None) -> None:
        if name is not None:
            self.name = name

    def gradcam_tensors(self, model: Any, inputs: Any, target_layer: Any,
                        targets: Optional[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int], np.ndarray]:
        """(activations, gradients of the class score, input (H, W), target indices) for Grad-CAM,
        activations/gradients as (batch, channels, h, w) numpy arrays."""
        raise NotImplementedError(f"the {self.name} plugin does not support Grad-CAM")

    def attention(self, model: Any, *inputs: Any, **kw_inputs: Any) -> List[np.ndarray]:
        """Attention probabilities of every attention layer, (batch, heads, query, key), in call order;
        [] when the model has none this plugin reads (tt.explain.attention then raises
        AttentionNotFound naming `attention_support`)."""
        raise NotImplementedError(f"the {self.name} plugin does not support attention capture")


@dataclass
class GradCAM:
    raw: np.ndarray        # (batch, h, w), not normalised: comparable across images and steps
    heatmap: np.ndarray    # (batch, H, W), upsampled to the input, each image scaled to [0, 1]
    targets: np.ndarray    # (batch,) the class index each map explains

    def __len__(self) -> int:
        return len(self.raw)


def cam_from_tensors(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """ReLU(sum_k alpha_k A^k) for NCHW activations and gradients of the class score."""
    a = np.asarray(activations, dtype=np.float64)
    g = np.asarray(gradients, dtype=np.float64)
    if a.shape != g.shape or a.ndim != 4:
        raise ConfigError(f"Grad-CAM needs (batch, channels, h, w) activations and gradients of the same shape, "
                          f"got {a.shape} and {g.shape}")
    alpha = g.mean(axis=(2, 3), keepdims=True)
    return np.maximum((alpha * a).sum(axis=1), 0.0)


def upsample(maps: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (batch, h, w) maps to (batch, H, W) (half-pixel centres)."""
    maps = np.asarray(maps, dtype=np.float64)
    _, h, w = maps.shape
    H, W = int(size[0]), int(size[1])

    def coords(n_out: int, n_in: int):
        x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        x = np.clip(x, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, x - lo

    y0, y1, fy = coords(H, h)
    x0, x1, fx = coords(W, w)
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx
    bot = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return top * (1 - fy)[None, :, None] + bot * fy[None, :, None]


def normalise(maps: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] (an all-zero map stays zero)."""
    maps = np.asarray(maps, dtype=np.float64)
    lo = maps.min(axis=(1, 2), keepdims=True)
    hi = maps.max(axis=(1, 2), keepdims=True)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return (maps - lo) / span


def gradcam_from_tensors(activations: np.ndarray, gradients: np.ndarray, input_size: Tuple[int, int],
                         targets: Union[Sequence[int], np.ndarray, None] = None) -> GradCAM:
    raw = cam_from_tensors(activations, gradients)
    heat = normalise(upsample(raw, input_size))
    t = np.asarray(targets if targets is not None else np.full(len(raw), -1), dtype=np.int64)
    return GradCAM(raw=raw, heatmap=heat, targets=t)


def explainer_for(model: Any, framework: Optional[str] = None) -> Explainer:
    """The Explainer of `framework`'s plugin, or of the plugin that recognises `model`; a plugin
    that names none gives the base Explainer (which says what it does not support)."""
    from .plugins import get_registry

    reg = get_registry()
    spec = reg.get("adapters", framework) if framework else reg.adapter_for(model)
    if spec is None:
        raise ConfigError(f"no installed tensortap plugin recognises a model of type {type(model).__module__}."
                          f"{type(model).__qualname__}; install tensortap-torch, -tensorflow or -mxnet")
    cls = spec.load_explainer()
    return cls() if cls is not None else Explainer(spec.name)


def gradcam(model: Any, inputs: Any, target_layer: Any, targets: Optional[Sequence[int]] = None,
            framework: Optional[str] = None) -> GradCAM:
    """Grad-CAM of `target_layer` (the layer or its name) for `targets` (None: predicted class).
    Does not change the model's mode or its parameters' gradients."""
    acts, grads, size, tgt = explainer_for(model, framework).gradcam_tensors(model, inputs, target_layer, targets)
    return gradcam_from_tensors(acts, grads, size, tgt)


def attention(model: Any, *inputs: Any, framework: Optional[str] = None, **kw_inputs: Any) -> List[np.ndarray]:
    """Attention probabilities of every attention layer, (batch, heads, query, key), in call order.
    Inputs go to the model as given: `attention(model, x)` or `attention(hf_model, **tokenizer(texts))`.
    Raises AttentionNotFound when the model has no attention the framework's plugin can read."""
    ex = explainer_for(model, framework)
    found = ex.attention(model, *inputs, **kw_inputs)
    if not found:
        raise no_attention_found(model, ex.name, ex.attention_support)
    return found


def no_attention_found(model: Any, framework: str, supported: str) -> AttentionNotFound:
    """The one error every framework gives when a model has no attention tensortap can read."""
    reads = f"reads {supported}" if supported else "reads no attention layers"
    return AttentionNotFound(
        f"tt.explain.attention found no attention it can read in {type(model).__name__}: for {framework} models "
        f"tensortap {reads}, and only those that run during the model's forward pass. Pass a model that contains "
        "one, or compute the probabilities yourself and save them with hook.save_tensor('attention/<layer>', "
        "probs, collections=['attention']) as a (batch, heads, query, key) array")


def record_gradcam(hook: "Union[Hook, Capture]", layer: str, activations: np.ndarray, gradients: np.ndarray,
                   images: np.ndarray, targets: Sequence[int], scores: Optional[np.ndarray] = None) -> None:
    """Save one Grad-CAM observation at the current step of a Hook (or of an adapter's session),
    in collection "feature_maps".

    Stored names (the contract the `gradcam` visualizer reads):
      gradcam/<layer>/activations (B, C, h, w)   gradcam/<layer>/gradients (B, C, h, w)
      gradcam/<layer>/cam (B, h, w) raw map      gradcam/<layer>/targets (B,)
      gradcam/<layer>/scores (B,) probability of the target class (optional)
      gradcam/images (B, H, W, C) float in [0, 1] or uint8, the inputs to overlay
    """
    cam = cam_from_tensors(activations, gradients).astype(np.float32)
    arrays = [(f"gradcam/{layer}/activations", np.asarray(activations)),
              (f"gradcam/{layer}/gradients", np.asarray(gradients)),
              (f"gradcam/{layer}/cam", cam),
              (f"gradcam/{layer}/targets", np.asarray(targets, dtype=np.int64))]
    if scores is not None:
        arrays.append((f"gradcam/{layer}/scores", np.asarray(scores, dtype=np.float32)))
    arrays.append(("gradcam/images", np.asarray(images)))
    for name, value in arrays:
        hook.capture(name, value, "feature_maps")
