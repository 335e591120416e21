"""Attention probabilities of Hugging Face transformers models (BERT, RoBERTa, DistilBERT, GPT-2,
ViT and others built the same way), whichever attention implementation the model runs.

transformers' attention modules compute query and key, then call the attention function of
`config._attn_implementation` ("eager", or "sdpa", the default, which returns no probabilities).
The model itself is never changed: on a step that saves attention (only), the module's forward
runs inside a `TorchFunctionMode` that watches its torch calls. With eager attention the
probabilities are the output of its softmax (the very tensor `output_attentions=True` returns, before
dropout); with SDPA they are recomputed from the exact arguments of its
`scaled_dot_product_attention` call (query, key, mask, causal flag, scale, grouped heads):
softmax(q k^T * scale + mask), masked keys exactly 0. On other steps the wrapper costs one Python
call and a check. Other implementations (flash, flex) are reported, not guessed.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from tensortap.adapter import Handle

from .util import eager, override_forward

_SOFTMAX = frozenset({F.softmax, torch.softmax, torch.Tensor.softmax})


def is_hf_attention(module: nn.Module) -> bool:
    """Is `module` a transformers attention module (one that calls the attention-function interface)?"""
    cls: Any = type(module)
    return cls.__module__.startswith("transformers.") and _calls_attention_interface(cls)


@functools.lru_cache(maxsize=None)
def _calls_attention_interface(cls: Any) -> bool:
    try:
        src = inspect.getsource(inspect.unwrap(cls.forward))
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in src


def sdpa_probs(query: torch.Tensor, key: torch.Tensor, value: Optional[torch.Tensor] = None,
               attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0, is_causal: bool = False,
               scale: Optional[float] = None, enable_gqa: bool = False) -> torch.Tensor:
    """The probabilities `F.scaled_dot_product_attention` weights `value` with for these arguments
    (its documented reference computation, without dropout), (batch, heads, query, key); a row with
    every key masked is 0."""
    with torch.no_grad():
        q = query if query.dtype in (torch.float32, torch.float64) else query.float()
        k = key.to(q.dtype)
        if enable_gqa and k.size(-3) != q.size(-3):
            k = k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
        s = torch.matmul(q, k.transpose(-2, -1)) * (q.size(-1) ** -0.5 if scale is None else scale)
        n_q, n_k = s.shape[-2:]
        if is_causal:
            s = s.masked_fill(~torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril(), float("-inf"))
        if attn_mask is not None:
            s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask.to(s.dtype)
        return torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)


class _Probe(TorchFunctionMode):
    """Watches one attention module's forward: keeps the probabilities of its (last) attention call."""

    def __init__(self, report: Callable[[str, BaseException], None], name: str) -> None:
        super().__init__()
        self.probs: Optional[torch.Tensor] = None
        self.report, self.name = report, name

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            if func is F.scaled_dot_product_attention:
                self.probs = sdpa_probs(*args, **kwargs)
            elif func in _SOFTMAX and isinstance(out, torch.Tensor) and out.dim() == 4:
                self.probs = out.detach()
        except Exception as e:  # noqa: BLE001 - capture must never break the forward pass
            self.report(f"could not compute attention of {self.name!r}", e)
        return out


def tap_module(module: nn.Module, name: str, sink: Callable[[str, torch.Tensor], None],
               active: Callable[[str], bool], report: Callable[[str, BaseException], None]) -> Handle:
    """Wrap `module.forward` (an instance attribute, removed by the handle): when `active(name)`,
    run it under a probe and give `sink(name, probs)` the probabilities it computed."""
    inner = module.forward

    @eager
    def probed(args: tuple, kwargs: dict) -> Any:
        probe = _Probe(report, name)
        with probe:
            out = inner(*args, **kwargs)
        if probe.probs is not None:
            sink(name, probe.probs)
        else:
            impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
            report(f"could not compute attention of {name!r}",
                   RuntimeError(f"attn_implementation={impl!r} made no softmax or scaled_dot_product_attention "
                                "call tensortap can read; use 'eager' or 'sdpa'"))
        return out

    @eager
    def wanted() -> bool:
        return active(name)

    def forward(*args: Any, **kwargs: Any) -> Any:
        if wanted():
            return probed(args, kwargs)
        return inner(*args, **kwargs)

    return override_forward(module, forward)


def attach(model: nn.Module, sink: Callable[[str, torch.Tensor], None], active: Callable[[str], bool],
           report: Callable[[str, BaseException], None]) -> List[Handle]:
    """Tap every transformers attention module of `model` (none when it has none)."""
    return [tap_module(m, name, sink, active, report) for name, m in model.named_modules() if is_hf_attention(m)]
