"""Gradients of block outputs without `attach_grad()` on them and without Python in the backward.

`attach_grad()` on an intermediate output turns it into a new leaf of the autograd graph, so
nothing flows upstream of it and the parameters before it get zero gradients. Instead, on the
steps that save output gradients, the selected block's output y is returned as y + z, where z is a
fresh all-zero leaf with `attach_grad()`: d(y + z)/dz is the identity, so after the user's backward
z.grad holds d loss / d y, while y keeps its place in the graph and every gradient upstream is what
it would have been. Values are unchanged (y + 0 == y), so training stays bit-identical
(tests/plugins/mxnet/test_mxnet_gradients.py); the gradient is read once the step ends, and only
if a backward wrote it (z's fresh-gradient flag).

Why not an identity `autograd.Function` whose backward keeps a copy of the incoming gradient (what
tensortap did before): on oneDNN builds (mxnet 1.9.1's default) a gradient that reaches a Python
Function or CustomOp straight from a oneDNN kernel (e.g. a convolution's backward) is read racily
by mxnet's threaded engine: on a conv16 -> tap -> conv32 chain, 24 of 50 backward passes gave the
tap and every parameter upstream of it wrong gradients (relative error 1e-3 up to inf), and the
user's training drifted; 0 of 50 with MXNET_ENGINE_TYPE=NaiveEngine, with MXNET_MKLDNN_ENABLED=0,
or with this zero leaf. A BatchNorm right after a tapped convolution of 8k channels still rounds
in the last bits on oneDNN builds (~1e-7 after a few steps, docs/mxnet.md); exact without oneDNN.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, List, Tuple

import numpy as np

from .blocks import flat_arrays, override_forward


def _tappable(a: Any) -> bool:
    return getattr(a, "stype", "default") == "default" and np.issubdtype(np.dtype(a.dtype), np.floating)


def with_leaf(sink: List[Tuple[str, Any]], name: str, y: Any) -> Any:
    """y + z for a new zero leaf z (gradient attached), recorded as (name, z) in `sink`."""
    from mxnet import autograd, nd

    with autograd.pause():
        z = nd.zeros(y.shape, ctx=y.context, dtype=y.dtype)
    z.attach_grad()
    sink.append((name, z))
    return y + z


def gradients(sink: List[Tuple[str, Any]]) -> Iterator[Tuple[str, Any]]:
    """(name, d loss / d output) for each leaf that a backward has written since it was made."""
    for name, z in sink:
        if z._fresh_grad:
            yield name, z.grad


def wrap_forward(block: Any, layer: str, sink: List[Tuple[str, Any]], counter: Callable[[], int]) -> Callable[[], None]:
    """Route `block`'s float NDArray outputs through zero leaves for this forward; returns the undo function."""
    from mxnet import autograd

    orig = type(block).forward

    def forward(*args):
        out = orig(block, *args)
        if not autograd.is_recording():
            return out
        k = counter()
        prefix = layer if k == 0 else f"{layer}#{k}"
        arrays = flat_arrays(out)
        if not arrays or len(arrays) != (len(out) if isinstance(out, (list, tuple)) else 1):
            return out  # nested outputs: leave them alone rather than guess their structure
        tapped = [with_leaf(sink, f"gradients/{prefix}/output_{i}", a) if _tappable(a) else a
                  for i, a in enumerate(arrays)]
        if isinstance(out, (list, tuple)):
            return type(out)(tapped)
        return tapped[0]

    return override_forward(block, forward)
