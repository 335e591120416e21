"""The numpy fake adapter (framework name "numpy") as a plugin, for tests only: it is no built-in.
The pytest plugin tensortap.testing.fixtures registers it for every test session; elsewhere call
`tensortap.testing.use_numpy_adapter()` (or name this module in TENSORTAP_PLUGINS)."""
from __future__ import annotations

from ..adapter import AdapterSpec
from ..hookspecs import hookimpl
from ..plugins import add_plugin_modules


def use_numpy_adapter() -> None:
    """Register the numpy adapter in this process and in the processes it starts (through
    TENSORTAP_PLUGINS): `tt.Hook(...).register(tensortap.testing.NumpyMLP())` then works."""
    add_plugin_modules(__name__)


@hookimpl
def tensortap_register_adapters() -> list[AdapterSpec]:
    return [AdapterSpec(name="numpy", model_modules=("tensortap.testing",),
                        adapter="tensortap.testing.adapter:NumpyAdapter",
                        description="numpy-only fake framework for tests and plugin authors",
                        conformance="tensortap.testing.conformance:NumpyKit")]
