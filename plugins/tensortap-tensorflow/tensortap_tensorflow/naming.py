"""How tensortap names Keras/TF things: variables by `variable.path`, layers by `layer.path`."""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

from tensortap.layers import LayerInfo


def variable_name(v: Any) -> str:
    """A Keras variable's `path` ("mlp/fc1/kernel"); a raw tf.Variable's name without ":0"."""
    path = getattr(v, "path", None)
    if isinstance(path, str) and path:
        return path
    name = str(getattr(v, "name", "variable"))
    return name[:-2] if name.endswith(":0") else name


def is_bias(name: str) -> bool:
    """Biases go to collection "biases": the last path component is "bias" (or BatchNorm's "beta")."""
    last = name.rsplit("/", 1)[-1]
    return last in ("bias", "beta") or last.startswith("bias")


def layer_name(layer: Any) -> str:
    """A layer's `path` once built ("mlp/fc1"), else its name."""
    path = getattr(layer, "path", None)
    return path if isinstance(path, str) and path else str(getattr(layer, "name", type(layer).__name__))


def layer_info(name: str, layer: Any) -> LayerInfo:
    """What a Keras layer is: an Activation layer's kind is its function's ("relu"); a layer built
    with `activation=` (Dense, Conv2D, SimpleRNN) applies it to its own result, so its outputs
    are that activation's outputs (its inputs are not its inputs). LSTM/GRU have a
    recurrent_activation too and no single activation of their output: none is recorded."""
    act = getattr(layer, "activation", None)
    act_name: Optional[str] = act if isinstance(act, str) else getattr(act, "__name__", None)
    if any(c.__name__ == "Activation" for c in type(layer).__mro__):
        return LayerInfo.of(name, layer, kind=act_name)
    fused = act_name if act_name and not hasattr(layer, "recurrent_activation") else None
    return LayerInfo.of(name, layer, activation=fused)


def sub_layers(model: Any) -> List[Any]:
    """Every layer below `model` (recursively, each once), InputLayers left out."""
    try:
        layers = list(model._flatten_layers(include_self=False, recursive=True))
    except (AttributeError, TypeError):
        layers = list(getattr(model, "layers", []))
    return [layer for layer in layers if type(layer).__name__ != "InputLayer"]


def float_variables(model: Any) -> Iterator[Tuple[str, Any]]:
    """(name, variable) of the model's floating-point weights, trainable or not (no RNG states)."""
    seen = set()
    for v in getattr(model, "weights", []):
        if id(v) in seen:
            continue
        seen.add(id(v))
        dtype = getattr(v, "dtype", "")
        if "float" in str(dtype):
            yield variable_name(v), v
