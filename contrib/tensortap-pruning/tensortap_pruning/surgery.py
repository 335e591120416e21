"""Remove channels from a PyTorch model in place, across every layer of their channel group.

Every layer the group touches is replaced by a new module of the smaller size holding the kept
slices (resizing modules in place crashed torch 2.13's CPU backward once they had run at full
size): producers lose output rows, norms and depthwise convs lose channels, consumers lose input
columns (a grouped conv: within each of its blocks; a Linear after a flatten: each channel's
spatial positions), all at the group's offset in layers shared with other groups.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import torch
import torch.nn as nn

from .graph import ChannelGroup


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) in `model`."""
    return sum(p.numel() for p in model.parameters())


def size_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers, in MB (10^6 bytes): what a saved state_dict holds."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    return n / 1e6


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=like.requires_grad)


def _new_conv(conv: nn.Module, weight: torch.Tensor, bias, groups: int) -> nn.Module:
    new = type(conv)(weight.shape[1] * groups, weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, groups, bias is not None, conv.padding_mode)
    new.weight = _param(weight, conv.weight)
    if bias is not None:
        new.bias = _param(bias, conv.bias)
    new.train(conv.training)
    return new.to(conv.weight.device)


def _keep(total: int, offset: int, drop: Sequence[int]) -> torch.Tensor:
    """Indices 0..total-1 without offset+drop."""
    gone = {offset + i for i in drop}
    return torch.tensor([i for i in range(total) if i not in gone], dtype=torch.long)


def _prune_out(m: nn.Module, drop: Sequence[int]) -> nn.Module:
    """A producer (conv or Linear) without output channels `drop`."""
    keep = _keep(m.weight.shape[0], 0, drop)
    bias = None if m.bias is None else m.bias[keep]
    if isinstance(m, nn.Linear):
        new = nn.Linear(m.in_features, int(keep.numel()), bias=bias is not None)
        new.weight = _param(m.weight[keep], m.weight)
        if bias is not None:
            new.bias = _param(bias, m.bias)
        new.train(m.training)
        return new.to(m.weight.device)
    return _new_conv(m, m.weight[keep], bias, m.groups)


def _prune_conv_in(conv: nn.Module, offset: int, drop: Sequence[int]) -> nn.Module:
    """A consumer conv without input channels offset+drop (a grouped conv: within each block)."""
    g = conv.groups
    if g == 1:
        return _new_conv(conv, conv.weight[:, _keep(conv.weight.shape[1], offset, drop)], conv.bias, 1)
    per_in, per_out = conv.weight.shape[1], conv.weight.shape[0] // g
    gone = sorted(offset + i for i in drop)
    blocks = []
    for j in range(g):
        local = [c - j * per_in for c in gone if j * per_in <= c < (j + 1) * per_in]
        blocks.append(conv.weight[j * per_out:(j + 1) * per_out][:, _keep(per_in, 0, local)])
    if len({b.shape[1] for b in blocks}) != 1:
        raise ValueError(f"{conv}: remove equally many input channels from each of its {g} groups")
    return _new_conv(conv, torch.cat(blocks), conv.bias, g)


def _prune_depthwise(conv: nn.Module, offset: int, drop: Sequence[int]) -> nn.Module:
    keep = _keep(conv.weight.shape[0], offset, drop)
    return _new_conv(conv, conv.weight[keep], None if conv.bias is None else conv.bias[keep], int(keep.numel()))


def _prune_norm(norm: nn.Module, offset: int, drop: Sequence[int]) -> nn.Module:
    """A new batch-norm / LayerNorm over the kept channels."""
    if isinstance(norm, nn.LayerNorm):
        n = norm.normalized_shape[0]
        keep = _keep(n, offset, drop)
        new = nn.LayerNorm(int(keep.numel()), eps=norm.eps, elementwise_affine=norm.elementwise_affine,
                           bias=norm.bias is not None)
        if norm.weight is not None:
            new.weight = _param(norm.weight[keep], norm.weight)
        if norm.bias is not None:
            new.bias = _param(norm.bias[keep], norm.bias)
        new.train(norm.training)
        return new.to(norm.weight.device if norm.weight is not None else "cpu")
    n = norm.weight.shape[0] if norm.affine else norm.running_mean.shape[0]
    keep = _keep(n, offset, drop)
    new = type(norm)(int(keep.numel()), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats)
    if norm.affine:
        new.weight = _param(norm.weight[keep], norm.weight)
        new.bias = _param(norm.bias[keep], norm.bias)
    if norm.track_running_stats and norm.running_mean is not None:
        new.running_mean.copy_(norm.running_mean[keep])
        new.running_var.copy_(norm.running_var[keep])
        new.num_batches_tracked.copy_(norm.num_batches_tracked)
    new.train(norm.training)
    return new.to(norm.weight.device if norm.affine else norm.running_mean.device)


def _prune_linear_in(lin: nn.Linear, offset: int, drop: Sequence[int], spatial: int) -> nn.Linear:
    gone = {(offset + i) * spatial + s for i in drop for s in range(spatial)}
    keep = torch.tensor([i for i in range(lin.in_features) if i not in gone], dtype=torch.long)
    new = nn.Linear(int(keep.numel()), lin.out_features, bias=lin.bias is not None)
    new.weight = _param(lin.weight[:, keep], lin.weight)
    if lin.bias is not None:
        new.bias = _param(lin.bias, lin.bias)
    new.train(lin.training)
    return new.to(lin.weight.device)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def check_removal(group: ChannelGroup, drop: Sequence[int]) -> None:
    """ValueError naming the problem unless `drop` can be removed from `group`."""
    if not group.prunable:
        raise ValueError(f"channel group {group.gid} cannot be pruned: {group.frozen or 'no conv produces it'}")
    if not drop:
        return
    if drop[0] < 0 or drop[-1] >= group.size:
        raise ValueError(f"channel indices {list(drop)} out of range for a group of {group.size} channels")
    if len(drop) >= group.size:
        raise ValueError(f"cannot remove all {group.size} channels of group {group.gid}")
    if group.slots > 1:
        block = group.size // group.slots
        counts = [sum(1 for i in drop if j * block <= i < (j + 1) * block) for j in range(group.slots)]
        if len(set(counts)) != 1 or counts[0] >= block:
            raise ValueError(f"channel group {group.gid} feeds or comes from a grouped conv: remove equally many "
                             f"channels from each of its {group.slots} blocks of {block} (asked: {counts})")


def remove_channels(model: nn.Module, group: ChannelGroup, drop: Iterable[int]) -> int:
    """Remove channels `drop` of `group` from every layer of the group in `model`; the offsets of
    the other groups of the same analysis (`group.siblings`) follow. Returns the number of
    parameters removed. Parameters are replaced: rebuild the optimizer."""
    drop = sorted({int(i) for i in drop})
    check_removal(group, drop)
    if not drop:
        return 0
    before = count_params(model)
    off = group.offset
    with torch.no_grad():
        for name in group.producers:
            _set_module(model, name, _prune_out(model.get_submodule(name), drop))
        for name in group.norms:
            _set_module(model, name, _prune_norm(model.get_submodule(name), off.get(name, 0), drop))
        for name in group.depthwise:
            _set_module(model, name, _prune_depthwise(model.get_submodule(name), off.get(name, 0), drop))
        for name in group.conv_consumers:
            _set_module(model, name, _prune_conv_in(model.get_submodule(name), off.get(name, 0), drop))
        for name, spatial in group.linear_consumers:
            _set_module(model, name, _prune_linear_in(model.get_submodule(name), off.get(name, 0), drop, spatial))
    for other in group.siblings:  # channels after ours in a shared layer moved down
        if other is group:
            continue
        for name, o in other.offset.items():
            if name in off and o > off[name]:
                other.offset[name] = o - len(drop)
    group.size -= len(drop)
    return before - count_params(model)


def params_removed(model: nn.Module, group: ChannelGroup, n: int) -> int:
    """How many parameters removing `n` channels of `group` removes (the surgery's arithmetic)."""
    mods = dict(model.named_modules())
    total = 0
    for name in group.producers:
        c = mods[name]
        total += n * (c.weight[0].numel() + (1 if c.bias is not None else 0))
    for name in group.norms:
        m = mods[name]
        total += n * (int(getattr(m, "weight", None) is not None) + int(getattr(m, "bias", None) is not None))
    for name in group.depthwise:
        c = mods[name]
        total += n * (c.weight[0].numel() + (1 if c.bias is not None else 0))
    for name in group.conv_consumers:
        c = mods[name]
        total += n * (c.out_channels // c.groups) * c.weight[0, 0].numel()
    for name, spatial in group.linear_consumers:
        total += n * spatial * mods[name].out_features
    for name in set(group.producers) & set(group.conv_consumers):  # its own input and output: counted twice
        c = mods[name]
        total -= n * (n // c.groups) * c.weight[0, 0].numel()
    for name, spatial in group.linear_consumers:
        if name in group.producers:
            total -= n * n * spatial
    return total


def plan_removal(scores: Dict[int, Sequence[float]], groups: Dict[int, ChannelGroup], n: int,
                 min_channels: int = 2) -> Dict[int, List[int]]:
    """The `n` globally least important channels over all groups, never leaving a group with
    fewer than `min_channels`. `scores[gid]` holds one (per-layer normalised) score per channel.
    A group tied to a grouped conv (`slots` > 1) loses channels in units of one per block: the
    r-th least important of each block together, scored by their mean."""
    cands = []
    for gid, s in scores.items():
        g = groups[gid]
        if g.slots <= 1:
            cands.extend((float(v), gid, (i,)) for i, v in enumerate(s))
            continue
        block = g.size // g.slots
        ranked = [sorted(range(j * block, (j + 1) * block), key=lambda i: float(s[i])) for j in range(g.slots)]
        for r in range(block):
            unit = tuple(order[r] for order in ranked)
            cands.append((sum(float(s[i]) for i in unit) / len(unit), gid, unit))
    cands.sort(key=lambda c: (c[0], c[1], c[2]))
    out: Dict[int, List[int]] = {}
    removed = 0
    for _, gid, unit in cands:
        if removed >= n:
            break
        g = groups[gid]
        left = g.size - len(out.get(gid, [])) - len(unit)
        if left < max(min_channels, g.slots):
            continue
        out.setdefault(gid, []).extend(unit)
        removed += len(unit)
    return out
