"""Registers the torch adapter. Imports nothing from torch: the spec recognises its classes by module."""
from __future__ import annotations

import sys

import tensortap

#: The torch versions this plugin supports, checked when its adapter first loads (a one-time
#: tensortap.FrameworkVersionWarning outside them). 2.1 is the first torch with
#: Tensor.register_post_accumulate_grad_hook, which gradient capture is built on (older torch
#: falls back to per-backward gradients); tested with torch 2.13.
TORCH = tensortap.SupportedVersions("torch", supported=">=2.1,<3")


@tensortap.hookimpl
def tensortap_register_adapters():
    return [tensortap.AdapterSpec(name="torch", model_modules=("torch",),
                                  adapter="tensortap_torch.adapter:TorchAdapter",
                                  conformance="tensortap_torch.conformance:Kit",
                                  explainer="tensortap_torch.explainer:TorchExplainer",
                                  instrument="tensortap_torch.instrument:TorchInstrumentation",
                                  versions=(TORCH,))]


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
