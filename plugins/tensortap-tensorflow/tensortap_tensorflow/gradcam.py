"""Grad-CAM inputs for Keras CNNs: activations of a layer and gradients of the class score.

No `model.output` is needed (subclassed and never-called models work): the target layer's
`call` is wrapped for one eager forward pass, its output is watched by a GradientTape, and the
class score's gradient with respect to it is taken. The model runs with training=False; no
variable, optimizer or mode changes. The maths (alpha, ReLU, upsampling) is in the core.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from tensortap.errors import ConfigError, did_you_mean

from .naming import layer_name, sub_layers
from .patching import patch, quiet


def find_layer(model: Any, target: Any) -> Any:
    """The layer object for `target` (a layer of the model, its name or its path)."""
    layers = sub_layers(model)
    if not isinstance(target, str):
        if any(layer is target for layer in layers):
            return target
        raise ConfigError(f"target_layer {getattr(target, 'name', target)!r} is not a layer of this model; "
                          "pass one of its layers or a layer name")
    for layer in layers:
        if target in (layer.name, layer_name(layer)):
            return layer
    names = [layer.name for layer in layers]
    raise ConfigError(f"no layer named {target!r} in the model." + did_you_mean(target, names)
                      + f" Layers: {', '.join(names)}")


def _channels_last(layer: Any) -> bool:
    fmt = getattr(layer, "data_format", None)
    if fmt is None:
        import keras

        fmt = keras.config.image_data_format()
    return fmt != "channels_first"


def gradcam_tensors(model: Any, inputs: Any, target_layer: Any,
                    targets: Optional[Sequence[int]]) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int], np.ndarray]:
    """(activations NCHW, d score / d activations NCHW, input (H, W), target classes)."""
    import tensorflow as tf

    layer = find_layer(model, target_layer)
    x = tf.convert_to_tensor(inputs)
    if x.dtype.is_integer:
        x = tf.cast(x, tf.float32)
    if len(x.shape) != 4:
        raise ConfigError(f"Grad-CAM needs a batch of images (batch, H, W, C), got shape {tuple(x.shape)}")
    seen: List[Any] = []
    tape = tf.GradientTape()

    def make(original):
        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            if not seen:
                t = tf.nest.flatten(out)[0]
                tape.watch(t)
                seen.append(t)
            return out

        return call

    handle = patch(layer, "call", make)
    try:
        with quiet(), tape:
            preds = model(x, training=False) if getattr(model, "_call_has_training_arg", True) else model(x)
            preds = tf.nest.flatten(preds)[0]
            if targets is None:
                tgt = tf.argmax(preds, axis=-1, output_type=tf.int32)
            else:
                tgt = tf.convert_to_tensor(np.asarray(targets, dtype=np.int32).reshape(-1))
                if tgt.shape[0] == 1 and preds.shape[0] != 1:
                    tgt = tf.repeat(tgt, preds.shape[0])
            score = tf.reduce_sum(tf.gather(preds, tgt, axis=1, batch_dims=1))
    finally:
        handle.remove()
    if not seen:
        raise ConfigError(f"layer {layer_name(layer)!r} was not called in the model's forward pass")
    acts = seen[0]
    grads = tape.gradient(score, acts)
    if grads is None:
        raise ConfigError(f"the model's output does not depend on layer {layer_name(layer)!r}")
    a, g = acts.numpy(), grads.numpy()
    if a.ndim != 4:
        raise ConfigError(f"Grad-CAM needs a convolutional layer with 4-D output, {layer_name(layer)!r} gives "
                          f"{a.shape}")
    if _channels_last(layer):
        a, g = a.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2)
        size = (int(x.shape[1]), int(x.shape[2]))
    else:
        size = (int(x.shape[2]), int(x.shape[3]))
    return np.ascontiguousarray(a), np.ascontiguousarray(g), size, tgt.numpy().astype(np.int64)
