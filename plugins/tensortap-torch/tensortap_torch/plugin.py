"""Registers the torch adapter. Imports nothing from torch: the spec recognises its classes by module."""
from __future__ import annotations

import tensortap


@tensortap.hookimpl
def tensortap_register_adapters():
    return [tensortap.AdapterSpec(name="torch", model_modules=("torch",),
                                  adapter="tensortap_torch.adapter:TorchAdapter",
                                  conformance="tensortap_torch.conformance:Kit",
                                  instrument="tensortap_torch.instrument:TorchInstrumentation")]
