"""Walking a Gluon block tree: stable layer names, and switching hybridization off for one call.

A hybridized HybridBlock runs its cached graph: child forward hooks fire once, at trace time,
with Symbols, and never again. On the steps where tensortap needs layer tensors it clears
`_active` on every hybridized block of the tree for that one forward pass (the cached graph is
kept, not rebuilt) and restores it afterwards: that forward runs imperatively, with the same
operators, so the values are those of the hybridized run (checked bit for bit in the tests).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Tuple

from tensortap.layers import LayerInfo


def walk(block: Any, path: str = "") -> Iterator[Tuple[str, Any]]:
    """(attribute path, block) of `block` and every descendant, each block once, depth first."""
    seen = set()
    stack = [(path, block)]
    while stack:
        p, b = stack.pop()
        if id(b) in seen:
            continue
        seen.add(id(b))
        yield p, b
        kids = list(getattr(b, "_children", {}).items())
        for name, child in reversed(kids):
            stack.append((f"{p}.{name}" if p else str(name), child))


def layer_names(model: Any) -> Dict[int, Tuple[str, Any]]:
    """id(block) -> (name, block): Gluon's own block name (its prefix without the trailing "_",
    e.g. "hybridsequential0_conv0"), or the attribute path where that name is empty or taken twice."""
    items = list(walk(model))
    counts: Dict[str, int] = {}
    for _, b in items:
        n = getattr(b, "name", "") or ""
        counts[n] = counts.get(n, 0) + 1
    out: Dict[int, Tuple[str, Any]] = {}
    for path, b in items:
        n = getattr(b, "name", "") or ""
        if not n or counts[n] > 1:
            n = path or type(b).__name__.lower()
        out[id(b)] = (n, b)
    return out


def layer_info(name: str, block: Any) -> LayerInfo:
    """What a Gluon block is: nn.Activation's kind is its act_type ("relu", "tanh", "softrelu");
    Dense/Conv built with `activation=` hold such an Activation as a child block, described on its
    own; BatchNormReLU's output is a ReLU's."""
    act = getattr(block, "_act_type", None)
    if isinstance(act, str):
        return LayerInfo.of(name, block, kind=act)
    if any(c.__name__ == "BatchNormReLU" for c in type(block).__mro__):
        return LayerInfo.of(name, block, kind="batch_norm", activation="relu")
    return LayerInfo.of(name, block)


class Deactivated:
    """Context: run the tree's hybridized blocks imperatively for one call, then restore them."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.blocks: List[Any] = []

    def __enter__(self) -> "Deactivated":
        self.off()
        return self

    def off(self) -> None:
        for _, b in walk(self.model):
            if getattr(b, "_active", False):
                b._active = False
                self.blocks.append(b)

    def restore(self) -> None:
        blocks, self.blocks = self.blocks, []
        for b in blocks:
            b._active = True

    def __exit__(self, *exc) -> None:
        self.restore()


def override_forward(block: Any, forward: Callable[..., Any]) -> Callable[[], None]:
    """Make `forward` this block instance's forward (an instance attribute); returns the undo."""
    block.forward = forward

    def undo() -> None:
        if block.__dict__.get("forward") is forward:
            del block.__dict__["forward"]

    return undo


def is_symbol(x: Any) -> bool:
    """True for mxnet Symbols (what hooks see at hybridization trace time)."""
    return type(x).__name__ == "Symbol" or "symbol" in type(x).__module__


def flat_arrays(value: Any) -> List[Any]:
    """The NDArrays in a block's inputs/outputs (nested tuples/lists flattened, None skipped)."""
    out: List[Any] = []
    stack = [value]
    while stack:
        v = stack.pop(0)
        if isinstance(v, (list, tuple)):
            stack[0:0] = list(v)
        elif v is not None and hasattr(v, "asnumpy"):
            out.append(v)
    return out
