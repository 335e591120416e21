"""Registers the mxnet adapter. Imports nothing from mxnet: the spec recognises its classes by module."""
from __future__ import annotations

import tensortap

#: The MXNet versions this plugin supports, checked when its adapter first loads (a one-time
#: tensortap.FrameworkVersionWarning outside them): the 1.9 line, the last of MXNet 1.x (tested with
#: 1.9.1; earlier 1.x and the MXNet 2 betas, whose Gluon API changed, are not tested).
MXNET = tensortap.SupportedVersions("mxnet", supported=">=1.9,<2")
#: GluonNLP, for BERT attention, checked only where the script imported it; tested with 0.10.0.
GLUONNLP = tensortap.SupportedVersions("gluonnlp", supported=">=0.10,<0.11", optional=True)


@tensortap.hookimpl
def tensortap_register_adapters():
    return [tensortap.AdapterSpec(name="mxnet", model_modules=("mxnet", "gluonnlp"),
                                  adapter="tensortap_mxnet.adapter:MXNetAdapter",
                                  conformance="tensortap_mxnet.conformance:Kit",
                                  explainer="tensortap_mxnet.explainer:MXNetExplainer",
                                  instrument="tensortap_mxnet.instrument:GluonInstrumentation",
                                  versions=(MXNET, GLUONNLP))]
