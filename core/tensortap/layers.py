"""What each captured layer is: its class and a framework-neutral kind ("relu", "tanh", "linear").

Adapters describe every layer whose inputs/outputs they may capture, once per layer (not per
step), through `Hook.describe_layers`; the run stores the descriptions in a "layers" index
record, and `Trial.layers()` / `Trial.layer_kind(tensor)` read them back, so rules find layers by
what they are instead of by name. Runs written before this record existed simply have no layers.

The kind comes from the layer's class (the first class in its MRO with a known name, so a
subclass of nn.ReLU is a "relu"), or from what the adapter knows better (a Gluon
`nn.Activation("tanh")`, a Keras `Activation("relu")`). A layer that applies an activation to
its own result (Keras `Dense(64, activation="relu")`) has that activation's kind as its
`activation`: its outputs are the activation's outputs, but its inputs are not the activation's
inputs (the pre-activation values are never captured).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

#: squashed name (lower case, letters and digits only) -> normalised kind
_KNOWN: Dict[str, str] = {
    "relu": "relu", "relu6": "relu6", "leakyrelu": "leaky_relu", "prelu": "prelu", "rrelu": "rrelu",
    "elu": "elu", "selu": "selu", "celu": "celu", "gelu": "gelu", "silu": "silu", "swish": "silu",
    "hardswish": "hard_swish", "hardsilu": "hard_swish", "mish": "mish", "softplus": "softplus",
    "softrelu": "softplus", "softsign": "softsign", "tanh": "tanh", "hardtanh": "hard_tanh",
    "sigmoid": "sigmoid", "logistic": "sigmoid", "hardsigmoid": "hard_sigmoid", "logsigmoid": "log_sigmoid",
    "softmax": "softmax", "logsoftmax": "log_softmax", "threshold": "threshold",
    "linear": "linear", "dense": "linear", "identity": "identity", "embedding": "embedding",
}
#: kinds that are activation functions (a layer's `activation` must be one of these)
ACTIVATION_KINDS = frozenset({
    "relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu", "hard_swish", "mish",
    "softplus", "softsign", "tanh", "hard_tanh", "sigmoid", "hard_sigmoid", "log_sigmoid", "softmax",
    "log_softmax", "threshold",
})
#: how messages name a kind ("ReLU layer")
_DISPLAY = {"relu": "ReLU", "relu6": "ReLU6", "leaky_relu": "LeakyReLU", "prelu": "PReLU", "gelu": "GELU",
            "elu": "ELU", "selu": "SELU", "silu": "SiLU", "tanh": "tanh", "sigmoid": "sigmoid"}

_LAYER_TENSOR = re.compile(r"^(?!gradients/)(?:replica_\d+/)?(?P<layer>.+)/(?P<io>input|output)_\d+$")
_CALL = re.compile(r"#\d+$")


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", str(name))
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_") or "layer"


def normalise_kind(name: Optional[str]) -> Optional[str]:
    """"ReLU", "re_lu", "softrelu", "LeakyReLU" -> "relu", "relu", "softplus", "leaky_relu";
    a name tensortap does not know -> its snake_case ("MyBlock" -> "my_block"); None -> None."""
    if name is None or not str(name):
        return None
    return _KNOWN.get(_squash(name)) or _snake(name)


def kind_of_class(cls: type) -> str:
    """The kind of a layer class: the first class in its MRO whose name tensortap knows, else
    the snake_case of its own name."""
    for c in getattr(cls, "__mro__", (cls,)):
        k = _KNOWN.get(_squash(getattr(c, "__name__", "")))
        if k is not None:
            return k
    return _snake(getattr(cls, "__name__", "layer"))


def display_kind(kind: str) -> str:
    """How a message names a kind: "ReLU", "tanh", "leaky_relu"."""
    return _DISPLAY.get(kind, kind)


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the model as the run records it.

    name:       the layer's name as it prefixes its tensors (`<name>/output_0`)
    class_name: its class, module-qualified ("torch.nn.modules.activation.ReLU")
    kind:       the normalised kind of the layer ("relu", "tanh", "linear", "conv2d", ...)
    activation: the kind of an activation the layer applies to its own result (Keras
                `Dense(activation="relu")`), else None
    """

    name: str
    class_name: str
    kind: str
    activation: Optional[str] = None

    @classmethod
    def of(cls, name: str, layer: Any, kind: Optional[str] = None, activation: Optional[str] = None) -> "LayerInfo":
        """Describe framework object `layer` named `name`; `kind` / `activation` are names the
        adapter read from the layer (an act_type, an activation function's __name__), normalised here."""
        t = type(layer)
        act = normalise_kind(activation)
        return cls(str(name), f"{t.__module__}.{t.__qualname__}", normalise_kind(kind) or kind_of_class(t),
                   act if act in ACTIVATION_KINDS else None)

    def kind_of(self, io: str) -> str:
        """What a tensor of this layer is the `io` ("input" or "output") of: the fused
        activation's kind for outputs of a layer that has one, else the layer's kind."""
        return self.activation if io == "output" and self.activation else self.kind

    def to_row(self) -> list:
        return [self.name, self.class_name, self.kind, self.activation]

    @classmethod
    def from_row(cls, row: Any) -> Optional["LayerInfo"]:
        """A row of a "layers" record, or None when malformed (a damaged or foreign run)."""
        if not (isinstance(row, list) and len(row) >= 3 and all(isinstance(x, str) for x in row[:3])):
            return None
        act = row[3] if len(row) > 3 and isinstance(row[3], str) else None
        return cls(row[0], row[1], row[2], act)


def layers_record(layers: Iterable[LayerInfo]) -> dict:
    """The index record that stores layer descriptions (read back by `Trial.layers()`)."""
    return {"type": "layers", "layers": [info.to_row() for info in layers]}


def read_layers(record: dict) -> List[LayerInfo]:
    rows = record.get("layers")
    if not isinstance(rows, list):
        return []
    return [info for info in map(LayerInfo.from_row, rows) if info is not None]


def split_layer_tensor(name: str) -> Optional[Tuple[str, str]]:
    """"blocks.0/output_1" -> ("blocks.0", "output"); "fc#2/input_0" (its third call) -> ("fc", "input"); a tensor
    that is not a layer's input or output (a parameter, a gradient) -> None."""
    m = _LAYER_TENSOR.match(name)
    if m is None:
        return None
    return _CALL.sub("", m.group("layer")), m.group("io")
