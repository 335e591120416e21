"""Grad-CAM tensors for Gluon CNNs (NCHW); the maths is tensortap.explain's, shared by every plugin.

One extra forward in `autograd.record(train_mode=False)` (BatchNorm uses its running statistics and
does not update them, dropout is off), hybridization off for that call, with the target block's
output replaced by a detached leaf A. Then `autograd.grad(sum_i y[i, target_i], [A])` returns
dy_c/dA as a new array: parameters' `.grad` buffers and the training graph are not touched.
Pooling runs in train mode during that forward (same output): on oneDNN builds a max pool recorded
in predict mode gets wrong gradients otherwise (see onednn.py).
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from tensortap.errors import ConfigError, did_you_mean

from .blocks import Deactivated, layer_names, override_forward, walk
from .onednn import enabled as onednn_enabled, has_max_pooling, pooling_in_train_mode
from .quiet import quiet


def resolve_layer(model: Any, target_layer: Any) -> Tuple[str, Any]:
    """(name, block) for `target_layer`: a block of `model`, its Gluon name, or its attribute path ("features.3")."""
    names = layer_names(model)
    if not isinstance(target_layer, str):
        if id(target_layer) in names:
            return names[id(target_layer)]
        raise ConfigError(f"target_layer {getattr(target_layer, 'name', target_layer)!r} is not a block of this model; "
                          "pass one of its blocks or the block's name")
    for n, b in names.values():
        if n == target_layer or getattr(b, "name", None) == target_layer:
            return n, b
    for path, b in walk(model):
        if path == target_layer:
            return names[id(b)]
    known = [n for n, _ in names.values()] + [p for p, _ in walk(model) if p]
    raise ConfigError(f"no block named {target_layer!r} in {type(model).__name__}." + did_you_mean(target_layer, known)
                      + f" Blocks: {', '.join(sorted(n for n, _ in names.values()))}")


def _context(model: Any):
    import mxnet as mx

    for p in model.collect_params().values():
        try:
            return p.list_ctx()[0]
        except Exception:  # noqa: BLE001 - deferred init: no context yet
            continue
    return mx.cpu()


def _as_input(model: Any, inputs: Any):
    from mxnet import nd

    x = inputs if hasattr(inputs, "asnumpy") else nd.array(np.asarray(inputs, dtype=np.float32), ctx=_context(model))
    if x.ndim != 4:
        raise ConfigError(f"Grad-CAM needs a batch of NCHW images (4 dimensions), got shape {tuple(x.shape)}")
    return x


def _guard_symbol_blocks(model: Any, held: dict) -> List[Callable[[], None]]:
    """On oneDNN builds, an imported SymbolBlock with max pooling that runs after the target layer
    would get wrong gradients (its cached graph pools in predict mode, see onednn.py): refuse it
    with an error rather than return a wrong map. Returns the undo functions."""
    from mxnet.gluon import SymbolBlock

    if not onednn_enabled():
        return []
    undo = []
    for _, b in walk(model):
        if isinstance(b, SymbolBlock) and has_max_pooling(b):
            def forward(*args, _b=b, _orig=type(b).forward):  # noqa: B008 (binds this block's forward now)
                if "a" in held:
                    raise ConfigError(
                        f"Grad-CAM would be wrong: the imported SymbolBlock {_b.name!r} runs after the target layer "
                        "and contains max pooling, whose gradient mxnet 1.9 with oneDNN computes from an unwritten "
                        "buffer in predict mode. Explain a layer after it, rebuild that part from Gluon blocks, or "
                        "run with MXNET_MKLDNN_ENABLED=0 (set before mxnet is imported)")
                return _orig(_b, *args)

            undo.append(override_forward(b, forward))
    return undo


def gradcam_tensors(model: Any, inputs: Any, target_layer: Any, targets: Optional[Sequence[int]] = None):
    """(activations, d score/d activations, (H, W), targets) as numpy, for tensortap.explain.gradcam."""
    from mxnet import autograd, nd

    _, layer = resolve_layer(model, target_layer)
    x = _as_input(model, inputs)
    held = {}
    orig = type(layer).forward

    def forward(*args):
        out = orig(layer, *args)
        if "a" in held or not hasattr(out, "detach"):
            return out
        a = out.detach()
        a.attach_grad()
        held["a"] = a
        return a

    undo = [override_forward(layer, forward)] + _guard_symbol_blocks(model, held)
    try:
        with quiet(), Deactivated(model), pooling_in_train_mode(), autograd.record(train_mode=False):
            logits = model(x)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            if "a" not in held:
                raise ConfigError(f"target layer {target_layer!r} did not run (or returned several arrays) "
                                  "during the forward pass; pick a block whose output is one feature map")
            t = (np.asarray(logits.argmax(axis=1).asnumpy(), dtype=np.int64) if targets is None
                 else np.asarray(targets, dtype=np.int64).reshape(-1))
            if len(t) != x.shape[0]:
                raise ConfigError(f"targets has {len(t)} entries for a batch of {x.shape[0]} images")
            score = nd.pick(logits, nd.array(t, ctx=logits.context), axis=1).sum()
        (grad,) = autograd.grad(score, [held["a"]], retain_graph=False, train_mode=False)
        acts = held["a"].asnumpy()
        if acts.ndim != 4:
            raise ConfigError(f"Grad-CAM needs a (batch, channels, h, w) feature map; {target_layer!r} gives "
                              f"{acts.shape}")
        return acts, grad.asnumpy(), (int(x.shape[2]), int(x.shape[3])), t
    finally:
        for fn in undo:
            fn()


def record(hook: Any, model: Any, inputs: Any, target_layer: Any, targets: Optional[Sequence[int]] = None,
           images: Optional[np.ndarray] = None) -> bool:
    """On a saved step whose collections want "feature_maps", compute Grad-CAM of `target_layer` for
    `inputs` and store it with tensortap.explain.record_gradcam; returns True if it did. `images`
    (B, H, W, C) for display defaults to the inputs, each scaled to [0, 1]."""
    from tensortap.explain import record_gradcam

    if hook is None or not hook.saving or not hook.wants("feature_maps"):
        return False
    name, _ = resolve_layer(model, target_layer)
    acts, grads, _, t = gradcam_tensors(model, inputs, target_layer, targets)
    x = _as_input(model, inputs)
    from mxnet import autograd, nd

    with quiet(), Deactivated(model), autograd.predict_mode():
        logits = model(x)
        logits = logits[0] if isinstance(logits, (list, tuple)) else logits
        probs = nd.softmax(logits, axis=1).asnumpy()
    scores = probs[np.arange(len(t)), t]
    if images is None:
        img = x.asnumpy().transpose(0, 2, 3, 1).astype(np.float64)
        lo = img.min(axis=(1, 2, 3), keepdims=True)
        span = np.maximum(img.max(axis=(1, 2, 3), keepdims=True) - lo, 1e-12)
        images = ((img - lo) / span).astype(np.float32)
    record_gradcam(hook, name, acts, grads, images, t, scores)
    return True
