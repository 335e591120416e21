"""Attention probabilities of every nn.MultiheadAttention (and of transformers models: hf_attention.py),
without changing what the model computes.

The call itself is never altered (need_weights stays as the caller passed it, fast paths stay
fast): after a module returns, the probabilities are recomputed from the same inputs with the
module's own weights (`F.multi_head_attention_forward(need_weights=True, training=False)`), so
they are the pre-dropout probabilities, (batch, heads, query, key), masked keys exactly 0.

Modules are tapped by wrapping their `forward` (an instance attribute, removed on detach), not
with module hooks: `nn.TransformerEncoderLayer` skips its fused fast path whenever any hook is
attached to it or its children, which would change its numerics. A `TransformerEncoderLayer`
is tapped as a whole (its `self_attn` is not called at all on the fast path): the attention is
recomputed from the layer's input (after `norm1` when `norm_first`). Nested-tensor inputs
(`TransformerEncoder`'s padding fast path) are padded back; there the rows of padding
queries are 0 (those positions are not computed at all on that path).
"""
from __future__ import annotations

import inspect
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from tensortap.adapter import Handle

from . import hf_attention
from .util import eager, override_forward, quiet

Sink = Callable[[str, torch.Tensor], None]


def mha_probs(m: nn.MultiheadAttention, query, key, value, key_padding_mask=None, attn_mask=None,
              is_causal: bool = False) -> torch.Tensor:
    """softmax(QK^T/sqrt(d) + masks) per head, (batch, heads, query, key), from `m`'s own weights."""
    with torch.no_grad():
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0 if m.batch_first else 1), key.unsqueeze(0 if m.batch_first else 1), \
                value.unsqueeze(0 if m.batch_first else 1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if m.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        if is_causal and attn_mask is None:
            n_q, n_k = query.shape[0], key.shape[0]
            attn_mask = torch.ones(n_q, n_k, dtype=torch.bool, device=query.device).triu(1)
        kw = {}
        if not m._qkv_same_embed_dim:
            kw = dict(use_separate_proj_weight=True, q_proj_weight=m.q_proj_weight,
                      k_proj_weight=m.k_proj_weight, v_proj_weight=m.v_proj_weight)
        _, w = F.multi_head_attention_forward(
            query, key, value, m.embed_dim, m.num_heads, m.in_proj_weight, m.in_proj_bias, m.bias_k, m.bias_v,
            m.add_zero_attn, 0.0, m.out_proj.weight, m.out_proj.bias, training=False,
            key_padding_mask=key_padding_mask, need_weights=True, attn_mask=attn_mask,
            average_attn_weights=False, is_causal=False, **kw)
    return w


def _unnest(src: torch.Tensor, width: Optional[int] = None):
    """(padded tensor, key padding mask) from a nested tensor of (len_i, E) sequences."""
    lengths = torch.tensor([c.shape[0] for c in src.unbind()], device=src.device)
    s = int(lengths.max()) if width is None else width
    padded = src.to_padded_tensor(0.0, output_size=(len(lengths), s, src.unbind()[0].shape[-1]))
    kpm = torch.arange(s, device=src.device)[None, :] >= lengths[:, None]
    return padded, kpm


def _encoder_layer_probs(layer: nn.TransformerEncoderLayer, src, src_mask=None, src_key_padding_mask=None,
                         is_causal: bool = False) -> torch.Tensor:
    """The probabilities `layer.self_attn` computes (or would compute, on the fused fast path)."""
    nested = src.is_nested
    if nested:
        src, src_key_padding_mask = _unnest(src)
    x = src
    if layer.norm_first:
        with quiet(), torch.no_grad():
            x = layer.norm1(x)
    p = mha_probs(layer.self_attn, x, x, x, src_key_padding_mask, src_mask, is_causal)
    if nested:  # padding queries do not exist on this path: their rows are 0, not made-up values
        p = p.masked_fill(src_key_padding_mask[:, None, :, None], 0.0)
    return p


class AttentionTap:
    """Wraps the forward of every attention module of a model; `sink(name, probs)` gets each result.

    `active(name)` is asked before any work: on steps nothing is saved a wrapped call costs one
    Python call and that check."""

    def __init__(self, sink: Sink, active: Callable[[str], bool], report: Callable[[str, BaseException], None]) -> None:
        self.sink, self.active, self.report = sink, active, report

    def attach(self, model: nn.Module) -> List[Handle]:
        handles: List[Handle] = []
        covered = set()
        for name, m in model.named_modules():
            if isinstance(m, nn.TransformerEncoderLayer):
                covered.add(id(m.self_attn))
                prefix = f"{name}.self_attn" if name else "self_attn"
                handles.append(self._wrap(m, prefix, _encoder_layer_probs))
            elif isinstance(m, nn.MultiheadAttention) and id(m) not in covered:
                handles.append(self._wrap(m, name, mha_probs))
        handles.extend(hf_attention.attach(model, self.sink, self.active, self.report))  # transformers models
        return handles

    def _wrap(self, module: nn.Module, name: str, probs_fn) -> Handle:
        inner = module.forward
        sig = inspect.signature(inner)

        @eager
        def record(args, kwargs):
            if self.active(name):
                try:
                    bound = sig.bind(*args, **kwargs)
                    bound.apply_defaults()
                    a = bound.arguments
                    if probs_fn is mha_probs:
                        vals = [a["query"], a["key"], a["value"], a.get("key_padding_mask"), a.get("attn_mask"),
                                bool(a.get("is_causal", False))]
                    else:
                        vals = [a["src"], a.get("src_mask"), a.get("src_key_padding_mask"),
                                bool(a.get("is_causal", False))]
                    self.sink(name, probs_fn(module, *vals))
                except Exception as e:  # noqa: BLE001 - capture must never break the forward pass
                    self.report(f"could not compute attention of {name!r}", e)

        def forward(*args, **kwargs):
            out = inner(*args, **kwargs)
            record(args, kwargs)
            return out

        return override_forward(module, forward)
