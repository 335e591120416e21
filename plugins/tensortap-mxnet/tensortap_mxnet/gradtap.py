"""Gradients of block outputs without `attach_grad()`.

`attach_grad()` on an intermediate output turns it into a new leaf of the autograd graph, so
nothing flows upstream of it and the parameters before it get zero gradients. Instead, on the
steps that save output gradients, the selected block's output passes through an identity
`autograd.Function`: forward returns an exact copy of the output, backward keeps a copy of the
incoming gradient and passes that same gradient upstream unchanged. Values and gradients are
unchanged, so training stays bit-identical (tests/plugins/mxnet/test_mxnet_gradients.py).

One exception, on oneDNN (MKLDNN) builds such as the pip wheel: a Convolution with a multiple of
8 channels leaves its output in a blocked oneDNN layout; the copy is in the plain layout, and a
BatchNorm reading it takes oneDNN's other backward kernel, which rounds differently (last-bit
differences, ~1e-7 after a few steps). A view or alias instead of a copy would keep the layout,
but mxnet 1.9.1 then corrupts memory in backward (NaNs, measured), so tensortap copies.
With MXNET_MKLDNN_ENABLED=0 training is bit-identical in every case.
"""
from __future__ import annotations

from typing import Any, Callable, List, Tuple

from .blocks import flat_arrays


def make_tap(sink: List[Tuple[str, Any]], name: str):
    """An identity autograd.Function whose backward appends (name, gradient copy) to `sink`."""
    from mxnet import autograd

    class _Tap(autograd.Function):
        def forward(self, x):  # noqa: D401 - mxnet API
            return x.copy()

        def backward(self, dy):
            sink.append((name, dy.copy()))
            return dy

    return _Tap()


def wrap_forward(block: Any, layer: str, sink: List[Tuple[str, Any]], counter: Callable[[], int]) -> Callable[[], None]:
    """Route `block`'s NDArray outputs through taps for this forward; returns the undo function."""
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
        tapped = [make_tap(sink, f"gradients/{prefix}/output_{i}")(a) for i, a in enumerate(arrays)]
        if isinstance(out, (list, tuple)):
            return type(out)(tapped)
        return tapped[0]

    block.forward = forward

    def undo() -> None:
        if block.__dict__.get("forward") is forward:
            del block.__dict__["forward"]

    return undo
