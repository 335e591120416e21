"""Test helpers for tensortap and its plugin authors: a numpy MLP, its adapter (registered only for
tests: `use_numpy_adapter()`, done for every pytest session by tensortap.testing.fixtures),
conformance kits."""
from .conformance import ConformanceKit, NumpyKit, batches
from .numpy_mlp import NumpyMLP, make_data
from .plugin import use_numpy_adapter

__all__ = ["ConformanceKit", "NumpyKit", "NumpyMLP", "batches", "make_data", "use_numpy_adapter"]
