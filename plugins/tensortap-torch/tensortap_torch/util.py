"""Small torch helpers shared by the adapter, Grad-CAM and attention capture."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Tuple, Union

import torch
from torch import nn

from tensortap.adapter import Handle
from tensortap.capture import is_quiet, quiet  # noqa: F401 - the one quiet context, for this plugin's modules
from tensortap.errors import ConfigError, did_you_mean


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (no BatchNorm statistic updates, no dropout), then restore
    each module's own flag exactly (a model half in train mode stays half in train mode)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def eager(fn):
    """`fn` run eagerly under torch.compile: Dynamo calls it (a graph break) instead of tracing
    into tensortap's bookkeeping, which would recompile the graph at every step."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return disable(fn) if disable is not None else fn


def override_forward(module: nn.Module, forward: Any) -> Handle:
    """Make `forward` the module's forward (an instance attribute: no module hook, which would send
    torch down its slower call path or off a fused fast path); the handle puts the original back."""
    had_own = "forward" in module.__dict__
    inner = module.__dict__.get("forward")
    module.forward = forward

    def remove() -> None:
        if module.__dict__.get("forward") is forward:
            if had_own:
                module.forward = inner
            else:
                del module.forward

    return Handle(remove)


def unwrap(model: Any) -> nn.Module:
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers,
    so parameter and layer names are the same with and without the wrapper."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def resolve_layer(model: nn.Module, layer: Union[str, nn.Module]) -> Tuple[str, nn.Module]:
    """(name, module) for a module of `model` given as the module itself or its dotted name."""
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return name, m
        raise ConfigError(f"the target layer {type(layer).__name__} is not a submodule of the model; "
                          "pass one of its modules or its name (see model.named_modules())")
    if isinstance(layer, str):
        mods = dict(model.named_modules())
        if layer in mods:
            return layer, mods[layer]
        raise ConfigError(f"the model has no module named {layer!r}." + did_you_mean(layer, [n for n in mods if n])
                          + " Names are those of model.named_modules(), e.g. 'layer4' or 'features.7'")
    raise ConfigError(f"target_layer must be a torch module or its name, got {type(layer).__name__}")


def tensors(value: Any) -> List[torch.Tensor]:
    """The tensors in a module's input or output (a tensor, or tuples/lists/dicts of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors(v)]
    return []


def dist_info() -> Tuple[int, int]:
    """(rank, world size) from torch.distributed when a process group is initialised, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # noqa: BLE001 - a broken distributed setup must not break capture
        pass
    return 0, 1
