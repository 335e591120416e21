"""Test helpers for tensortap and its plugin authors: a numpy MLP, its adapter, conformance kits."""
from .conformance import ConformanceKit, NumpyKit, batches
from .numpy_mlp import NumpyMLP, make_data

__all__ = ["NumpyMLP", "make_data", "ConformanceKit", "NumpyKit", "batches"]
