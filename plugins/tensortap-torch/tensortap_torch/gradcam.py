"""Grad-CAM inputs for torch models: activations of a layer and gradients of the class score y_c.

The model runs once more, in eval mode (restored afterwards, module by module), with grad
enabled even where the caller disabled it (`torch.no_grad()`, `torch.inference_mode()`: inputs
created in inference mode are cloned into ordinary tensors). The target layer's output is
replaced by a detached leaf clone so that `torch.autograd.grad(y_c, A)` touches nothing upstream
and no parameter's `.grad`; BatchNorm statistics do not move (eval mode). In eval mode the images
of a batch are independent, so one backward of sum_i y_{c_i} gives every image's own gradient.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from tensortap.errors import ConfigError

from .convert import to_numpy
from .util import eval_mode, quiet, resolve_layer, tensors, unwrap


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, dict) and "logits" in out:
        out = out["logits"]
    found = tensors(out)
    if not found or found[0].dim() != 2:
        shape = tuple(found[0].shape) if found else None
        raise ConfigError(f"Grad-CAM needs the model to return class scores (batch, classes); it returned {shape}. "
                          "Pass a model (or a wrapper module) whose first output is the logits")
    return found[0]


@contextlib.contextmanager
def grad_enabled() -> Iterator[None]:
    """Autograd on for tensortap's own pass, whatever the caller's context (no_grad, inference_mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _ordinary(args: tuple, root: nn.Module) -> tuple:
    """`args` with inference tensors (made under torch.inference_mode) cloned into ordinary ones,
    which autograd may save; a model whose own parameters are inference tensors cannot be explained."""
    if any(t.is_inference() for t in root.parameters()):
        raise ConfigError("Grad-CAM needs gradients, but this model's parameters were created inside "
                          "torch.inference_mode(); create (or load) the model outside it")
    return tuple(a.clone() if isinstance(a, torch.Tensor) and a.is_inference() else a for a in args)


def run(model: nn.Module, inputs: Any, target_layer: Union[str, nn.Module],
        targets: Optional[Sequence[int]] = None
        ) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int], np.ndarray, np.ndarray]:
    """(activations NCHW, d y_c / d activations NCHW, input (H, W), targets, softmax score of each target)."""
    root = unwrap(model)
    _, layer = resolve_layer(root, target_layer)
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    captured = []

    def grab(_m, _a, out):
        if captured:  # a layer called twice: the first call explains
            return None
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            raise ConfigError(f"Grad-CAM target layer must output a (batch, channels, h, w) tensor, got "
                              f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}; pick a convolutional layer "
                              "or block")
        leaf = out.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()  # not a leaf: in-place ops after the layer stay legal

    h = layer.register_forward_hook(grab)
    try:
        with quiet(), eval_mode(root), grad_enabled():
            args = _ordinary(args, root)
            out = root(*args)
            if not captured:
                raise ConfigError("the target layer was not called by the model's forward pass; "
                                  "pick a layer the model uses")
            logits = _logits(out)
            t = _targets(logits, targets)
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), captured[0])
    finally:
        h.remove()
    scores = torch.softmax(logits.detach().float(), dim=1).gather(1, t[:, None])[:, 0]
    size = tuple(int(s) for s in tensors(args)[0].shape[-2:])
    return (to_numpy(captured[0]), to_numpy(grad), size, to_numpy(t).astype(np.int64), to_numpy(scores))


def _targets(logits: torch.Tensor, targets: Optional[Sequence[int]]) -> torch.Tensor:
    """One class index per image: the predicted class, or `targets` (one index broadcasts)."""
    if targets is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(logits.shape[0])
    if t.numel() != logits.shape[0] or int(t.min()) < 0 or int(t.max()) >= logits.shape[1]:
        raise ConfigError(f"targets must be one class index in [0, {logits.shape[1]}) per image "
                          f"({logits.shape[0]} images), got {np.asarray(targets).tolist()}")
    return t


def images_nhwc(x: torch.Tensor) -> np.ndarray:
    """Inputs as (B, H, W, C) float32 in [0, 1] (each image min-max scaled) for overlays."""
    a = to_numpy(x).astype(np.float32)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ConfigError(f"Grad-CAM images must be (batch, channels, H, W), got {a.shape}")
    a = a.transpose(0, 2, 3, 1)
    lo = a.min(axis=(1, 2, 3), keepdims=True)
    hi = a.max(axis=(1, 2, 3), keepdims=True)
    return (a - lo) / np.where(hi > lo, hi - lo, 1.0)


def choose_layer(model: nn.Module, patterns: Sequence[str]) -> Tuple[str, nn.Module]:
    """The feature_maps layer: the first module (model.named_modules() order) whose name matches one
    of `patterns` (re.search; anchor with ^...$ to be exact); with no patterns, the last Conv2d."""
    mods = [(n, m) for n, m in model.named_modules() if n]
    if patterns:
        rx = re.compile("|".join(f"(?:{p})" for p in patterns))
        for n, m in mods:
            if rx.search(n):
                return n, m
        raise ConfigError(f"collection 'feature_maps': no module name matches {list(patterns)}; "
                          f"module names are e.g. {[n for n, _ in mods[:8]]}")
    convs = [(n, m) for n, m in mods if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("collection 'feature_maps' needs a layer: the model has no Conv2d; "
                          "pass tt.Collection('feature_maps', include_regex=['^<module name>$'])")
    return convs[-1]


def batch_slice(args: tuple, n: int) -> tuple:
    """The first n items of every batched tensor argument (same leading size as the first tensor)."""
    first = tensors(args)
    if not first:
        return args
    b = first[0].shape[0] if first[0].dim() else 0
    return tuple(a[:n] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == b else a for a in args)
