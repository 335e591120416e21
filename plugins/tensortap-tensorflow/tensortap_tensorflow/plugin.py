"""Registers the tensorflow adapter. Imports nothing from tensorflow: the spec recognises its classes by module."""
from __future__ import annotations

import tensortap

#: The TensorFlow versions this plugin supports, checked when its adapter first loads (a one-time
#: tensortap.FrameworkVersionWarning outside them): 2.16 is the first TensorFlow whose tf.keras is
#: Keras 3; tested with 2.17 and 2.21.
TENSORFLOW = tensortap.SupportedVersions("tensorflow", supported=">=2.16,<3")
#: Keras 3 is required: the adapter drives Keras 3's Variable, Optimizer.apply and compute_loss,
#: which Keras 2 (tf_keras) does not have (a ConfigError there); tested with 3.15.
KERAS = tensortap.SupportedVersions("keras", supported=">=3,<4", required=">=3")


@tensortap.hookimpl
def tensortap_register_adapters():
    return [tensortap.AdapterSpec(name="tensorflow", model_modules=("tensorflow", "keras", "tf_keras"),
                                  adapter="tensortap_tensorflow.adapter:TensorFlowAdapter",
                                  conformance="tensortap_tensorflow.conformance:Kit",
                                  explainer="tensortap_tensorflow.explainer:TensorFlowExplainer",
                                  instrument="tensortap_tensorflow.instrument:KerasInstrumentation",
                                  versions=(TENSORFLOW, KERAS),
                                  extras=("keras_callback", "wrap_tape", "watch_gradcam"))]
