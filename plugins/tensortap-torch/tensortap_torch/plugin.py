"""Registers the torch adapter. Imports nothing from torch: the spec recognises its classes by module."""
from __future__ import annotations

import sys

import tensortap


@tensortap.hookimpl
def tensortap_register_adapters():
    return [tensortap.AdapterSpec(name="torch", model_modules=("torch",),
                                  adapter="tensortap_torch.adapter:TorchAdapter",
                                  conformance="tensortap_torch.conformance:Kit")]


def _process_rank():
    """torch.distributed's rank when the user's script already initialised it (torch not imported here)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # noqa: BLE001 - a broken distributed setup must not break the Hook
        pass
    return None


# the hook only where the core knows it: an older tensortap skips a plugin implementing an unknown hook
if hasattr(tensortap.hookspecs, "tensortap_process_rank"):
    tensortap_process_rank = tensortap.hookimpl(specname="tensortap_process_rank")(_process_rank)
