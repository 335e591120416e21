"""Channel dependency analysis of a PyTorch model: which layers must shrink together.

The model is traced once with torch.fx (only to read its structure: the user's module keeps
running as it is). Every tensor's channel dimension (dim 1; the features of a 2-D tensor) is
followed as a *layout*: a list of segments, each a run of channels of one *channel group*.

- a conv (groups=1) or a Linear starts a new group (its *producer*) and consumes its input's
  groups (each at its offset in the input);
- a grouped conv consumes and produces groups whose channels must be removed in equal numbers
  from each of its `groups` blocks (`ChannelGroup.slots`); a depthwise conv (groups = in = out
  channels) carries its input's channels through, its filters removed with them;
- batch-norms and LayerNorm over the channels carry them, their weights sliced at the offset;
  activations, pooling, dropout and other element-wise ops carry them unchanged;
- `torch.cat` on the channel dim concatenates layouts (DenseNet's features, Inception branches);
- a residual `+` (or an element-wise `*`, e.g. squeeze-excitation) merges the groups of its
  operands: their channels must stay aligned;
- a flatten feeding a Linear consumes each group's channels with their spatial positions.

Removing channel i of a group removes it from every producer, norm, depthwise conv and consumer
of the group at once, so the pruned model stays consistent. A group is *frozen* (never pruned)
when anything the analysis does not understand touches it: the model output, a slice or split,
a transposed conv, a custom module, a reshape other than a flatten.
"""
from __future__ import annotations

import math
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
                nn.Hardsigmoid, nn.Mish, nn.PReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Identity, nn.Upsample)
#: modules whose output is the feature map Molchanov et al. rank (after the nonlinearity)
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PASS_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.elu,
                  torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, F.dropout, F.dropout1d, F.dropout2d, F.max_pool1d,
                  F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                  F.adaptive_max_pool2d, F.interpolate}
PASS_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone", "detach", "float",
                "double", "half", "to"}
#: element-wise binary ops: operands' channels aligned (or one broadcast over them)
BINARY_OPS = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul, operator.sub,
              torch.sub, "add", "add_", "__add__", "__iadd__", "mul", "mul_", "__mul__", "sub", "sub_"}
Segment = Tuple[int, int]  # (group id, number of channels)


@dataclass
class ChannelGroup:
    """Channels that must be pruned together, and every layer they touch.

    Offsets (`offset[layer]`) say where this group's channels start in a layer that sees several
    groups side by side (after a concatenation); 0 otherwise."""

    gid: int
    size: int = 0
    producers: List[str] = field(default_factory=list)         # convs/linears whose output channels these are
    norms: List[str] = field(default_factory=list)             # batch-norms / LayerNorms over these channels
    depthwise: List[str] = field(default_factory=list)         # depthwise convs carrying these channels through
    conv_consumers: List[str] = field(default_factory=list)    # convs taking these channels as input
    linear_consumers: List[Tuple[str, int]] = field(default_factory=list)  # (linear, spatial size per channel)
    # stored layer names whose output is exactly these channels
    taps: List[str] = field(default_factory=list)
    activation_taps: List[str] = field(default_factory=list)   # the subset that are activations (preferred)
    offset: Dict[str, int] = field(default_factory=dict)       # layer -> first channel of this group in it
    # remove equally many channels from each of `slots` blocks
    slots: int = 1
    frozen: Optional[str] = None                               # why it may not be pruned, or None
    # every group of the analysis
    siblings: List["ChannelGroup"] = field(default_factory=list, repr=False, compare=False)

    @property
    def prunable(self) -> bool:
        return self.frozen is None and bool(self.producers)

    @property
    def rank_taps(self) -> List[str]:
        """The feature maps the Taylor criterion is computed on: activations if any, else all taps."""
        return self.activation_taps or self.taps

    def layers(self) -> List[str]:
        """Every layer this group touches."""
        return (self.producers + self.norms + self.depthwise + self.conv_consumers
                + [n for n, _ in self.linear_consumers])


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


def _shape(node: Any) -> Optional[Tuple[int, ...]]:
    meta = getattr(node, "meta", {}).get("tensor_meta") if hasattr(node, "meta") else None
    shape = getattr(meta, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _numel_after(shape: Tuple[int, ...], start: int = 2) -> int:
    n = 1
    for s in shape[start:]:
        n *= int(s)
    return n


def _trace(model: nn.Module, example_input: Any):
    try:
        gm = symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        raise ValueError(f"tensortap-pruning needs a model torch.fx can trace ({type(e).__name__}: {e}); "
                         "move data-dependent control flow out of forward() or prune a traceable sub-module") from None
    modes = [(m, m.training) for m in model.modules()]  # gm shares the model's modules
    gm.eval()
    try:
        with torch.no_grad():  # eval + no_grad: batch-norm statistics do not move
            ShapeProp(gm).propagate(*(example_input if isinstance(example_input, tuple) else (example_input,)))
    finally:
        for m, training in modes:
            m.training = training
    return gm


def analyse(model: nn.Module, example_input: torch.Tensor) -> List[ChannelGroup]:
    """Trace `model` and return its channel groups (prunable or frozen, with the reason).

    `example_input` is one batch (its shapes fix the flatten sizes of linear layers).
    Raises ValueError naming the problem when torch.fx cannot trace the model."""
    return _Analysis(model, _trace(model, example_input)).run()


class _Analysis:
    def __init__(self, model: nn.Module, gm) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.uf = _UnionFind()
        self.info: Dict[int, ChannelGroup] = {}
        self.lay: Dict[Any, Tuple[Segment, ...]] = {}                    # node -> its dim-1 channels
        self.flat: Dict[Any, Tuple[Tuple[Segment, ...], int]] = {}        # node -> (layout, spatial) of a flattened map
        self.calls: Dict[str, int] = {}
        self.seen: Dict[Tuple[int, str], int] = {}                        # (group, layer) -> offset: same layer twice?

    # ---- bookkeeping ---------------------------------------------------------------------
    def new_group(self, size: int, why_frozen: Optional[str] = None) -> Tuple[Segment, ...]:
        g = self.uf.add(len(self.info))
        self.info[g] = ChannelGroup(g, size, frozen=why_frozen)
        return ((g, size),)

    def find(self, layout: Tuple[Segment, ...]) -> Tuple[Segment, ...]:
        return tuple((self.uf.find(g), n) for g, n in layout)

    def freeze(self, layout, why: str) -> None:
        for g, _ in layout or ():
            grp = self.info[self.uf.find(g)]
            if grp.frozen is None:
                grp.frozen = why

    def attach(self, layout, attr: str, name: str, extra: Any = None) -> None:
        """Record layer `name` in list `attr` of every group of `layout`, with its offset."""
        off = 0
        for g, n in layout:
            grp = self.info[self.uf.find(g)]
            getattr(grp, attr).append(name if extra is None else (name, extra))
            if (grp.gid, name) in self.seen and self.seen[(grp.gid, name)] != off:
                self.freeze(((grp.gid, n),), f"{name} sees these channels twice")
            self.seen[(grp.gid, name)] = off
            grp.offset[name] = off
            off += n

    def tap(self, layout, name: str, activation: bool) -> None:
        if len(layout) == 1:
            grp = self.info[self.uf.find(layout[0][0])]
            grp.taps.append(name)
            if activation:
                grp.activation_taps.append(name)

    def layer_name(self, target: str) -> str:
        k = self.calls.get(target, 0)
        self.calls[target] = k + 1
        return target if k == 0 else f"{target}#{k}"

    def freeze_inputs(self, node, ins, why: str) -> None:
        for a in ins:
            self.freeze(self.lay.get(a), why)
            if a in self.flat:
                self.freeze(self.flat[a][0], why)

    # ---- the walk ------------------------------------------------------------------------
    def run(self) -> List[ChannelGroup]:
        for node in self.gm.graph.nodes:
            ins: List[Any] = []
            torch.fx.node.map_arg((node.args, node.kwargs), lambda a, ins=ins: ins.append(a) or a)  # nested lists too
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                self.freeze_inputs(node, ins, "reaches the model output")
                continue
            if node.op == "call_module":
                handled = self.module(node, self.modules[node.target], ins)
                if not handled:
                    m = self.modules[node.target]
                    self.freeze_inputs(node, ins, f"feeds {type(m).__name__} {node.target}, which tensortap-pruning "
                                                  "does not resize")
                continue
            if not self.function(node, ins):
                tgt = node.target
                self.freeze_inputs(node, ins, f"used by {getattr(tgt, '__name__', tgt)} ({node.name}), which "
                                              "tensortap-pruning does not follow")
        return self.merged()

    def module(self, node, m: nn.Module, ins: List[Any]) -> bool:
        name = self.layer_name(node.target)
        src = self.lay.get(ins[0]) if ins else None
        src_shape = _shape(ins[0]) if ins else None
        shape = _shape(node)
        if isinstance(m, CONVS):
            if src is None:
                if any(a in self.flat or a in self.lay for a in ins):
                    return False
                out = self.new_group(m.out_channels)            # a conv on the model input
                self.info[out[0][0]].producers.append(node.target)
            elif m.groups == 1:
                self.attach(src, "conv_consumers", node.target)
                out = self.new_group(m.out_channels)
                self.info[out[0][0]].producers.append(node.target)
            elif m.groups == m.in_channels == m.out_channels:  # depthwise: channel i stays channel i
                self.attach(src, "depthwise", node.target)
                out = src
            elif len(src) == 1:                                  # grouped: equal removals per block
                self.attach(src, "conv_consumers", node.target)
                g = self.info[self.uf.find(src[0][0])]
                g.slots = math.lcm(g.slots, m.groups)
                out = self.new_group(m.out_channels)
                o = self.info[out[0][0]]
                o.producers.append(node.target)
                o.slots = m.groups
            else:
                self.freeze(src, f"feeds grouped conv {node.target} after a concatenation")
                out = self.new_group(m.out_channels, f"produced by grouped conv {node.target} fed by a concatenation")
            self.lay[node] = out
            self.tap(out, name, False)
            return True
        if isinstance(m, BATCH_NORMS) and src is not None:
            self.attach(src, "norms", node.target)
            self.lay[node] = src
            self.tap(src, name, False)
            return True
        if isinstance(m, nn.LayerNorm) and src is not None and src_shape is not None:
            if len(m.normalized_shape) != 1 or len(src_shape) != 2:
                return False       # normalised over more than the channels: not resizable channel by channel
            self.attach(src, "norms", node.target)
            self.lay[node] = src
            self.tap(src, name, False)
            return True
        if isinstance(m, PASS_MODULES) and src is not None:
            if isinstance(m, nn.PReLU) and m.num_parameters != 1:
                return False
            self.lay[node] = src
            self.tap(src, name, isinstance(m, ACTIVATION_MODULES))
            return True
        if isinstance(m, PASS_MODULES) and ins and ins[0] in self.flat:
            self.flat[node] = self.flat[ins[0]]
            return True
        if isinstance(m, nn.Flatten) and src is not None and src_shape is not None and m.start_dim == 1 \
                and m.end_dim == -1:
            self.flat[node] = (src, _numel_after(src_shape))
            return True
        if isinstance(m, nn.Linear):
            if ins and ins[0] in self.flat:
                lay, spatial = self.flat[ins[0]]
            elif src is not None and src_shape is not None and len(src_shape) == 2:
                lay, spatial = src, 1
            elif not any(a in self.lay or a in self.flat for a in ins):
                lay, spatial = (), 1                             # a linear on the model input
            else:
                return False
            self.attach(lay, "linear_consumers", node.target, spatial)
            if shape is not None and len(shape) == 2:
                out = self.new_group(m.out_features)
                self.info[out[0][0]].producers.append(node.target)
                self.lay[node] = out
                self.tap(out, name, False)
            else:                                                # (batch, ..., features): not followed further
                self.new_group(m.out_features, f"{node.target} has a {len(shape or ())}-D output")
            return True
        return False

    def function(self, node, ins: List[Any]) -> bool:
        tgt = node.target
        lays = [self.lay[a] for a in ins if a in self.lay]
        if tgt in BINARY_OPS:
            tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
            if len(tensors) == 2 and len(lays) == 2:
                a, b = (self.find(x) for x in lays)
                na, nb = sum(n for _, n in a), sum(n for _, n in b)
                if na == nb and [n for _, n in a] == [n for _, n in b]:
                    out = tuple((self.uf.union(ga, gb), n) for (ga, n), (gb, _) in zip(a, b))
                    self.lay[node] = out
                    return True
                if nb == 1 or na == 1:                           # one operand broadcast over the other's channels
                    self.lay[node] = a if nb == 1 else b
                    return True
                return False
            if len(tensors) == 2 and len(lays) == 1:
                other = next(a for a in tensors if a not in self.lay)
                oshape = _shape(other)
                if oshape is not None and len(oshape) > 1 and oshape[1] != 1:
                    return False                                 # an untracked per-channel tensor
                if other in self.flat:
                    return False
                self.lay[node] = lays[0]
                return True
            if len(tensors) == 1 and len(lays) == 1:             # x + constant
                self.lay[node] = lays[0]
                return True
            return not lays and not any(a in self.flat for a in ins)
        if tgt is torch.cat or tgt is torch.concat:
            seq = node.args[0] if node.args else node.kwargs.get("tensors")
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            shape = _shape(node)
            if not isinstance(seq, (list, tuple)) or shape is None:
                return False
            dim = dim + len(shape) if dim < 0 else dim
            if dim != 1 or not all(a in self.lay for a in seq):
                return False
            self.lay[node] = tuple(s for a in seq for s in self.lay[a])
            return True
        if tgt in PASS_FUNCTIONS or (node.op == "call_method" and tgt in PASS_METHODS):
            first = node.args[0] if node.args else None
            if first in self.lay and len(lays) == 1:
                self.lay[node] = self.lay[first]
                return True
            if first in self.flat and not lays:
                self.flat[node] = self.flat[first]
                return True
            return not lays and not any(a in self.flat for a in ins)
        if tgt in (torch.flatten, "flatten", "view", "reshape"):
            first = node.args[0] if node.args else None
            shape, src_shape = _shape(node), _shape(first)
            if first in self.lay and shape is not None and src_shape is not None and len(shape) == 2 \
                    and len(src_shape) >= 2 and shape[0] == src_shape[0]:
                self.flat[node] = (self.lay[first], _numel_after(src_shape))
                return True
            if first in self.lay and shape == src_shape:
                self.lay[node] = self.lay[first]
                return True
            return not lays and not any(a in self.flat for a in ins)
        if tgt is getattr or tgt in ("size", "dim"):
            return True  # shape queries do not consume channels
        return not lays and not any(a in self.flat for a in ins)

    def merged(self) -> List[ChannelGroup]:
        merged: Dict[int, ChannelGroup] = {}
        for g, grp in self.info.items():
            root = self.uf.find(g)
            if root not in merged:
                merged[root] = ChannelGroup(root, grp.size)
            m = merged[root]
            if m.size != grp.size:
                m.frozen = m.frozen or f"residual add of {m.size} and {grp.size} channels"
            for attr in ("producers", "norms", "depthwise", "conv_consumers", "linear_consumers", "taps",
                         "activation_taps"):
                getattr(m, attr).extend(getattr(grp, attr))
            for layer, off in grp.offset.items():
                if m.offset.setdefault(layer, off) != off:
                    m.frozen = m.frozen or f"{layer} sees these channels twice"
            m.slots = math.lcm(m.slots, grp.slots)
            m.frozen = m.frozen or grp.frozen
        out = [merged[k] for k in sorted(merged)]
        for g in out:
            if g.size % g.slots:
                g.frozen = g.frozen or f"{g.size} channels do not split into {g.slots} equal blocks"
            g.siblings = out
        return out
