"""Registers the tensorflow adapter. Imports nothing from tensorflow: the spec recognises its classes by module."""
from __future__ import annotations

import tensortap


@tensortap.hookimpl
def tensortap_register_adapters():
    return [tensortap.AdapterSpec(name="tensorflow", model_modules=("tensorflow", "keras", "tf_keras"),
                                  adapter="tensortap_tensorflow.adapter:TensorFlowAdapter",
                                  conformance="tensortap_tensorflow.conformance:Kit",
                                  instrument="tensortap_tensorflow.instrument:KerasInstrumentation")]
