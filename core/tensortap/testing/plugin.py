"""Registers the numpy fake adapter (framework name "numpy") like any framework plugin."""
from __future__ import annotations

from ..adapter import AdapterSpec
from ..hookspecs import hookimpl


@hookimpl
def tensortap_register_adapters():
    return [AdapterSpec(name="numpy", model_modules=("tensortap.testing",),
                        adapter="tensortap.testing.adapter:NumpyAdapter",
                        description="numpy-only fake framework for tests and plugin authors",
                        conformance="tensortap.testing.conformance:NumpyKit")]
