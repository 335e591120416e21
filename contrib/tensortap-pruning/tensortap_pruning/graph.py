"""Channel dependency analysis of a PyTorch CNN: which layers must shrink together.

The model is traced once with torch.fx (only to read its structure: the user's module keeps
running as it is). Every conv output starts a *channel group*; batch-norms, activations,
pooling and dropout carry a group through unchanged; a residual `+` merges the groups of its
operands (their channels must stay aligned); convs, and linears after a flatten, consume a
group. Removing channel i of a group removes it from every producer, batch-norm and consumer
of the group at once, so the pruned model stays consistent.

A group is *frozen* (never pruned) when anything the analysis does not understand touches
it: the model output, a concatenation, a grouped/depthwise conv, a custom module.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx import symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp

#: modules that keep the channel dimension as it is
PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                nn.Identity)
#: modules whose output is the feature map Molchanov et al. rank (after the nonlinearity)
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish)
PASS_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, torch.tanh, F.dropout,
                  F.dropout2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach", "float"}
ADD_OPS = {operator.add, operator.iadd, torch.add}


@dataclass
class ChannelGroup:
    """Channels that must be pruned together, and every layer they touch."""

    gid: int
    size: int = 0
    producers: List[str] = field(default_factory=list)         # convs whose output channels these are
    norms: List[str] = field(default_factory=list)             # batch-norms over these channels
    conv_consumers: List[str] = field(default_factory=list)    # convs taking these channels as input
    linear_consumers: List[Tuple[str, int]] = field(default_factory=list)  # (linear, spatial size per channel)
    taps: List[str] = field(default_factory=list)              # stored layer names whose output has these channels
    activation_taps: List[str] = field(default_factory=list)   # the subset that are activations (preferred)
    frozen: Optional[str] = None                               # why it may not be pruned, or None

    @property
    def prunable(self) -> bool:
        return self.frozen is None and bool(self.producers)

    @property
    def rank_taps(self) -> List[str]:
        """The feature maps the Taylor criterion is computed on: activations if any, else all taps."""
        return self.activation_taps or self.taps


class _UnionFind:
    def __init__(self) -> None:
        self.parent: Dict[int, int] = {}

    def add(self, x: int) -> int:
        self.parent[x] = x
        return x

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


def _numel_after(meta: Any, start: int = 2) -> int:
    shape = tuple(meta.shape)
    n = 1
    for s in shape[start:]:
        n *= int(s)
    return n


def analyse(model: nn.Module, example_input: torch.Tensor) -> List[ChannelGroup]:
    """Trace `model` and return its channel groups (prunable or frozen, with the reason).

    `example_input` is one batch (its shapes fix the flatten sizes of linear layers).
    Raises ValueError naming the problem when torch.fx cannot trace the model."""
    try:
        gm = symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        raise ValueError(f"tensortap-pruning needs a model torch.fx can trace ({type(e).__name__}: {e}); "
                         "move data-dependent control flow out of forward() or prune a traceable sub-module") from None
    modes = [(m, m.training) for m in model.modules()]  # gm shares the model's modules
    gm.eval()
    try:
        with torch.no_grad():  # eval + no_grad: batch-norm statistics do not move
            ShapeProp(gm).propagate(example_input)
    finally:
        for m, training in modes:
            m.training = training
    modules = dict(gm.named_modules())
    uf = _UnionFind()
    info: Dict[int, ChannelGroup] = {}
    chan: Dict[Any, int] = {}                  # node -> group of its dim-1 channels
    flat: Dict[Any, Tuple[int, int]] = {}      # node -> (group, spatial) for a flattened (B, C*S) tensor
    calls: Dict[str, int] = {}

    def new_group(size: int) -> int:
        g = uf.add(len(info))
        info[g] = ChannelGroup(g, size)
        return g

    def freeze(g: Optional[int], why: str) -> None:
        if g is not None and info[g].frozen is None:
            info[g].frozen = why

    def tensor_args(node) -> List[Any]:
        found: List[Any] = []
        torch.fx.node.map_arg((node.args, node.kwargs), lambda a: found.append(a) or a)  # nested lists too
        return found

    def layer_name(target: str) -> str:
        k = calls.get(target, 0)
        calls[target] = k + 1
        return target if k == 0 else f"{target}#{k}"

    for node in gm.graph.nodes:
        ins = tensor_args(node)
        in_g = [uf.find(chan[a]) for a in ins if a in chan]
        in_flat = [flat[a] for a in ins if a in flat]
        meta = node.meta.get("tensor_meta")
        if node.op == "placeholder" or node.op == "get_attr":
            continue
        if node.op == "output":
            for g in in_g:
                freeze(g, "reaches the model output")
            for g, _ in in_flat:
                freeze(g, "reaches the model output")
            continue
        handled = False
        if node.op == "call_module":
            m = modules[node.target]
            name = layer_name(node.target)
            if isinstance(m, nn.Conv2d):
                handled = True
                src = in_g[0] if in_g else None
                if m.groups != 1:
                    freeze(src, f"feeds grouped conv {node.target}")
                    out = new_group(m.out_channels)
                    freeze(out, f"produced by grouped conv {node.target}")
                else:
                    if src is not None:
                        info[src].conv_consumers.append(node.target)
                    out = new_group(m.out_channels)
                    info[out].producers.append(node.target)
                info[out].taps.append(name)
                chan[node] = out
            elif isinstance(m, nn.BatchNorm2d) and in_g:
                handled = True
                info[in_g[0]].norms.append(node.target)
                info[in_g[0]].taps.append(name)
                chan[node] = in_g[0]
            elif isinstance(m, PASS_MODULES) and in_g:
                handled = True
                info[in_g[0]].taps.append(name)
                if isinstance(m, ACTIVATION_MODULES):
                    info[in_g[0]].activation_taps.append(name)
                chan[node] = in_g[0]
            elif isinstance(m, nn.Flatten) and in_g and m.start_dim == 1 and meta is not None:
                handled = True
                flat[node] = (in_g[0], _numel_after(ins[0].meta["tensor_meta"]))
            elif isinstance(m, (nn.Dropout, nn.ReLU, nn.ReLU6, nn.Identity)) and in_flat:
                handled = True
                flat[node] = in_flat[0]
            elif isinstance(m, nn.Linear) and in_flat:
                handled = True
                g, spatial = in_flat[0]
                info[g].linear_consumers.append((node.target, spatial))
            elif isinstance(m, nn.Linear) and in_g and ins[0].meta["tensor_meta"].shape.__len__() == 2:
                handled = True
                info[in_g[0]].linear_consumers.append((node.target, 1))
            if not handled:
                for g in in_g:
                    freeze(g, f"feeds {type(m).__name__} {node.target}, which tensortap-pruning does not resize")
                for g, _ in in_flat:
                    freeze(g, f"feeds {type(m).__name__} {node.target}")
            continue
        # call_function / call_method
        tgt = node.target
        if tgt in ADD_OPS or tgt in ("add", "add_", "__add__", "__iadd__"):
            if len(in_g) == 2:
                chan[node] = uf.union(*in_g)
                handled = True
            elif len(in_g) == 1 and len(ins) == 1:     # x + constant
                chan[node] = in_g[0]
                handled = True
        elif tgt in PASS_FUNCTIONS or (node.op == "call_method" and tgt in PASS_METHODS):
            if len(in_g) == 1 and len(ins) == 1:
                chan[node] = in_g[0]
                handled = True
            elif in_flat and len(ins) == 1:
                flat[node] = in_flat[0]
                handled = True
        elif (tgt in (torch.flatten, "flatten", "view", "reshape")) and in_g and meta is not None:
            src_meta = ins[0].meta.get("tensor_meta")
            if src_meta is not None and len(meta.shape) == 2 and len(src_meta.shape) >= 2 \
                    and int(meta.shape[0]) == int(src_meta.shape[0]):
                flat[node] = (in_g[0], _numel_after(src_meta))
                handled = True
        elif tgt in (getattr, "size", "dim") or tgt is getattr:
            handled = True  # shape queries do not consume channels
        if not handled:
            for g in in_g:
                freeze(g, f"used by {getattr(tgt, '__name__', tgt)} ({node.name}), which tensortap-pruning does not follow")
            for g, _ in in_flat:
                freeze(g, f"used by {getattr(tgt, '__name__', tgt)} ({node.name})")

    merged: Dict[int, ChannelGroup] = {}
    for g, grp in info.items():
        root = uf.find(g)
        if root not in merged:
            merged[root] = ChannelGroup(root, grp.size)
        m = merged[root]
        if m.size != grp.size:
            m.frozen = m.frozen or f"residual add of {m.size} and {grp.size} channels"
        for attr in ("producers", "norms", "conv_consumers", "linear_consumers", "taps", "activation_taps"):
            getattr(m, attr).extend(getattr(grp, attr))
        m.frozen = m.frozen or grp.frozen
    return [merged[k] for k in sorted(merged)]
