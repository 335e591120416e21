"""Remove channels from a PyTorch model in place, across every layer of their channel group."""
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


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias) -> nn.Conv2d:
    new = nn.Conv2d(weight.shape[1] * conv.groups, weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias is not None, conv.padding_mode)
    new.weight = _param(weight, conv.weight)
    if bias is not None:
        new.bias = _param(bias, conv.bias)
    new.train(conv.training)
    return new.to(conv.weight.device)


def _pruned_conv_out(conv: nn.Conv2d, keep: torch.Tensor) -> nn.Conv2d:
    return _new_conv(conv, conv.weight[keep], None if conv.bias is None else conv.bias[keep])


def _pruned_conv_in(conv: nn.Conv2d, keep: torch.Tensor) -> nn.Conv2d:
    return _new_conv(conv, conv.weight[:, keep], conv.bias)


def _pruned_norm(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    """A new batch-norm over the kept channels. (Resizing the old module in place crashed
    torch 2.13's CPU backward with "double free or corruption" once it had run at full size.)"""
    new = nn.BatchNorm2d(int(keep.numel()), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
    if bn.affine:
        new.weight = _param(bn.weight[keep], bn.weight)
        new.bias = _param(bn.bias[keep], bn.bias)
    if bn.track_running_stats and bn.running_mean is not None:
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    new.train(bn.training)
    return new.to(bn.weight.device if bn.affine else bn.running_mean.device)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _prune_linear_in(lin: nn.Linear, keep: torch.Tensor, channels: int, spatial: int) -> None:
    w = lin.weight.reshape(lin.out_features, channels, spatial)[:, keep].reshape(lin.out_features, -1)
    lin.weight = _param(w, lin.weight)
    lin.in_features = int(keep.numel()) * spatial


def remove_channels(model: nn.Module, group: ChannelGroup, drop: Iterable[int]) -> int:
    """Remove channels `drop` of `group` from every producer, batch-norm and consumer in `model`.
    Returns the number of parameters removed. Parameters are replaced: rebuild the optimizer."""
    if not group.prunable:
        raise ValueError(f"channel group {group.gid} cannot be pruned: {group.frozen or 'no conv produces it'}")
    drop = sorted(set(int(i) for i in drop))
    if not drop:
        return 0
    if drop[0] < 0 or drop[-1] >= group.size:
        raise ValueError(f"channel indices {drop} out of range for a group of {group.size} channels")
    if len(drop) >= group.size:
        raise ValueError(f"cannot remove all {group.size} channels of group {group.gid}")
    mods: Dict[str, nn.Module] = dict(model.named_modules())
    before = sum(p.numel() for p in model.parameters())
    keep = torch.tensor([i for i in range(group.size) if i not in set(drop)], dtype=torch.long)
    with torch.no_grad():
        for name in group.producers:
            _set_module(model, name, _pruned_conv_out(model.get_submodule(name), keep))
        for name in group.norms:
            _set_module(model, name, _pruned_norm(mods[name], keep))
        for name in group.conv_consumers:
            _set_module(model, name, _pruned_conv_in(model.get_submodule(name), keep))
        for name, spatial in group.linear_consumers:
            _prune_linear_in(mods[name], keep, group.size, spatial)
    group.size = int(keep.numel())
    return before - sum(p.numel() for p in model.parameters())


def params_removed(model: nn.Module, group: ChannelGroup, n: int) -> int:
    """How many parameters removing `n` channels of `group` removes (the surgery's arithmetic)."""
    mods = dict(model.named_modules())
    total = 0
    for name in group.producers:
        c = mods[name]
        total += n * (c.weight[0].numel() + (1 if c.bias is not None else 0))
    for name in group.norms:
        total += n * 2 if mods[name].affine else 0
    for name in group.conv_consumers:
        c = mods[name]
        total += n * c.out_channels * c.weight[0, 0].numel()
    for name, spatial in group.linear_consumers:
        total += n * spatial * mods[name].out_features
    return total


def plan_removal(scores: Dict[int, Sequence[float]], groups: Dict[int, ChannelGroup], n: int,
                 min_channels: int = 2) -> Dict[int, List[int]]:
    """The `n` globally least important channels over all groups, never leaving a group with
    fewer than `min_channels`. `scores[gid]` holds one (per-layer normalised) score per channel."""
    cands = []
    for gid, s in scores.items():
        for i, v in enumerate(s):
            cands.append((float(v), gid, i))
    cands.sort()
    out: Dict[int, List[int]] = {}
    for v, gid, i in cands:
        if sum(len(x) for x in out.values()) >= n:
            break
        if groups[gid].size - len(out.get(gid, [])) <= min_channels:
            continue
        out.setdefault(gid, []).append(i)
    return out
