"""Registers the mxnet adapter. Imports nothing from mxnet: the spec recognises its classes by module."""
from __future__ import annotations

import tensortap


@tensortap.hookimpl
def tensortap_register_adapters():
    return [tensortap.AdapterSpec(name="mxnet", model_modules=("mxnet", "gluonnlp"),
                                  adapter="tensortap_mxnet.adapter:MXNetAdapter",
                                  conformance="tensortap_mxnet.conformance:Kit",
                                  instrument="tensortap_mxnet.instrument:GluonInstrumentation")]
