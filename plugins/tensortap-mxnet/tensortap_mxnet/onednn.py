"""Right max-pooling gradients when autograd records in predict mode (MXNet 1.9 with oneDNN).

oneDNN's max-pooling backward sends each gradient to the position where the forward found the
maximum, read from a workspace that only a `forward_training` primitive writes. MXNet builds that
primitive only when the Pooling op runs in train mode; under `autograd.record(train_mode=False)`
it builds a `forward_scoring` one, so the workspace stays unwritten, yet the backward still reads it:
gradients land at stale positions (relative error ~1, different from call to call as the memory is
reused; measured for 1-D, 2-D, 3-D and global max pooling, any channel count). Every other layer
checked (convolution, BatchNorm, LRN, activations, softmax, dense, average pooling, ...) is right.

Grad-CAM has to record in predict mode (BatchNorm on its running statistics, no dropout), so for
that one forward every Pooling op runs in train mode instead: its output is the same in both modes
(only the workspace differs), with or without oneDNN. All of mxnet's imperative op functions
(`nd.Pooling`, `npx.pooling`, Gluon's pooling blocks, and names bound to them at import) call one
function, `mxnet.ndarray.register._imperative_invoke`; it is wrapped for the duration of the block.
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Iterator


def _op_handle(name: str) -> int:
    from mxnet.base import _LIB, c_str, check_call

    handle = ctypes.c_void_p()
    check_call(_LIB.NNGetOpHandle(c_str(name), ctypes.byref(handle)))
    return int(handle.value)


@contextlib.contextmanager
def pooling_in_train_mode() -> Iterator[None]:
    """Within the block, the imperative Pooling operator runs in train mode (same output, and the
    workspace its oneDNN backward reads is written)."""
    from mxnet import autograd
    from mxnet.ndarray import register

    pooling = _op_handle("Pooling")  # also the handle of npx.pooling (_npx_pooling is an alias)
    original = register._imperative_invoke

    def invoke(op: Any, *args: Any) -> Any:
        if op == pooling:
            with autograd.train_mode():
                return original(op, *args)
        return original(op, *args)

    register._imperative_invoke = invoke
    try:
        yield
    finally:
        register._imperative_invoke = original


def enabled() -> bool:
    """True when this mxnet runs oneDNN kernels (a oneDNN build, MXNET_MKLDNN_ENABLED not "0")."""
    import os

    import mxnet as mx

    return bool(mx.runtime.Features().is_enabled("MKLDNN")) and os.environ.get("MXNET_MKLDNN_ENABLED", "1") != "0"


def has_max_pooling(symbol_block: Any) -> bool:
    """True if the graph of an imported SymbolBlock contains max pooling (Pooling's default type).
    Its cached graph runs as one op, out of reach of `pooling_in_train_mode`."""
    import json

    graph = getattr(symbol_block, "_cached_graph", None)
    if not graph:
        return False
    nodes = json.loads(graph[1].tojson()).get("nodes", [])
    return any(n.get("op") in ("Pooling", "_npx_pooling") and n.get("attrs", {}).get("pool_type", "max") == "max"
               for n in nodes)
