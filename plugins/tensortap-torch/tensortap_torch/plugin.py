"""Registers the torch adapter. Imports nothing from torch: the spec recognises its classes by module."""
from __future__ import annotations

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
