"""Attention scores of keras.layers.MultiHeadAttention without changing what the layer returns.

The layer's `_compute_attention` is wrapped: the original runs exactly as before (Keras may
take its fused dot-product path when scores are not asked for), and, only when tensortap
wants them, the scores are recomputed the way Keras' explicit path computes them:
softmax(einsum(key, query / sqrt(key_dim))) with the same mask, shape (batch, heads, query, key).
"""
from __future__ import annotations

from typing import Any, Callable, List

import numpy as np

from .naming import sub_layers
from .patching import patch, quiet


def is_mha(layer: Any) -> bool:
    try:
        from keras.layers import MultiHeadAttention
    except ImportError:  # pragma: no cover
        return False
    return isinstance(layer, MultiHeadAttention)


def attention_layers(model: Any) -> List[Any]:
    layers = [model] if is_mha(model) else []
    return layers + [layer for layer in sub_layers(model) if is_mha(layer)]


def _split_args(args, kwargs):
    """(query, key, value, attention_mask, use_causal_mask) from _compute_attention's arguments."""
    names = ("query", "key", "value", "attention_mask", "training", "return_attention_scores")
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    return (bound["query"], bound["key"], bound["value"], bound.get("attention_mask"),
            bool(kwargs.get("use_causal_mask", False)))


def recompute_scores(layer: Any, query, key, value, attention_mask, use_causal_mask: bool):
    """The attention probabilities as Keras' explicit (non-fused) path computes them."""
    from keras import ops

    with quiet():
        if use_causal_mask:
            causal = layer._compute_causal_mask(query, value)
            attention_mask = causal if attention_mask is None else ops.logical_and(
                ops.cast(attention_mask, "bool"), causal)
        q = ops.multiply(query, ops.cast(layer._inverse_sqrt_key_dim, query.dtype))
        scores = ops.einsum(layer._dot_product_equation, key, q)
        return layer._masked_softmax(scores, attention_mask)


def patch_compute_attention(layer: Any, on_scores: Callable[[Any, Callable[[], Any]], None]):
    """Wrap layer._compute_attention; on_scores(layer, make_scores) decides whether to build them."""

    def make(original):
        def _compute_attention(*args, **kwargs):
            out = original(*args, **kwargs)
            try:
                given = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
                if given is not None:
                    on_scores(layer, lambda: given)
                else:
                    q, k, v, mask, causal = _split_args(args, kwargs)
                    on_scores(layer, lambda: recompute_scores(layer, q, k, v, mask, causal))
            except Exception as e:  # noqa: BLE001 - never break the model
                on_scores(layer, e)
            return out

        return _compute_attention

    return patch(layer, "_compute_attention", make)


def collect_attention(model: Any, *inputs: Any) -> List[np.ndarray]:
    """Run model(*inputs) in inference mode and return every MHA layer's scores in call order
    ([] without such a layer: the model is not run)."""
    import tensorflow as tf

    got: List[np.ndarray] = []
    errors: List[BaseException] = []

    def on_scores(layer, make):
        if isinstance(make, BaseException):
            errors.append(make)
            return
        got.append(np.array(tf.convert_to_tensor(make()).numpy(), copy=True))

    layers = attention_layers(model)
    if not layers:
        return []  # tt.explain.attention raises AttentionNotFound, the same in every framework
    handles = [patch_compute_attention(layer, on_scores) for layer in layers]
    try:
        with quiet():
            if is_mha(model):
                model(*inputs, training=False)
            else:
                x = inputs[0] if len(inputs) == 1 else list(inputs)
                model(x, training=False) if _takes_training(model) else model(x)
    finally:
        for h in reversed(handles):
            h.remove()
    if errors:
        raise errors[0]
    return got


def _takes_training(model: Any) -> bool:
    return bool(getattr(model, "_call_has_training_arg", True))
