"""GluonNLP BERT attention probabilities, from a model built with output_attention=False.

gluonnlp 0.10's `DotProductSelfAttentionCell` computes softmax(QK^T/sqrt(d)) (keys beyond
valid_length get exactly 0), passes it through its child `dropout_layer`, and discards it
unless the encoder was built with output_attention=True. tensortap reads the *input* of that
dropout block: the attention probabilities before dropout, reshaped to (batch, heads, query,
key). Their rows sum to 1 over the valid keys in train and eval mode alike; in eval mode they
equal gluonnlp's own output_attention=True result (which in train mode is post-dropout:
zeroed entries and survivors scaled by 1/(1-p)).
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import numpy as np

from .blocks import Deactivated, layer_names


def attention_cells(model: Any) -> List[Tuple[str, Any]]:
    """(layer name, cell) of every gluonnlp DotProductSelfAttentionCell in `model`, in tree order."""
    import sys

    if "gluonnlp" not in sys.modules:
        return []
    try:
        from gluonnlp.model.bert import DotProductSelfAttentionCell
    except Exception:  # noqa: BLE001 - a gluonnlp without BERT has no such cells
        return []
    names = layer_names(model)
    from .blocks import walk

    return [(names[id(b)][0], b) for _, b in walk(model) if isinstance(b, DotProductSelfAttentionCell)]


def probabilities(cell: Any, dropout_input: Any) -> Any:
    """(batch * heads, q, k) softmax output of `cell` -> (batch, heads, q, k), as an NDArray view."""
    heads = int(cell._num_heads)
    n, q, k = dropout_input.shape
    return dropout_input.reshape((n // heads, heads, q, k))


def compute(model: Any, inputs: Sequence[Any]) -> List[np.ndarray]:
    """Run `model(*inputs)` once in predict mode (no dropout, nothing recorded, hybridization off for
    that call) and return the attention probabilities of every cell, in call order ([] without cells:
    the model is not run)."""
    from mxnet import autograd

    from .quiet import quiet

    cells = attention_cells(model)
    if not cells:
        return []  # tt.explain.attention raises AttentionNotFound, the same in every framework
    got: List[Any] = []
    handles = []
    for _, cell in cells:
        def on_dropout(block, args, out, _cell=cell):
            got.append(probabilities(_cell, args[0]))
        handles.append(cell.dropout_layer.register_forward_hook(on_dropout))
    try:
        with quiet(), Deactivated(model), autograd.pause(train_mode=False):
            model(*inputs)
        return [g.asnumpy() for g in got]
    finally:
        for h in handles:
            h.detach()
