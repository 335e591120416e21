"""smdebug's collections: CollectionKeys, and Collection as a tensortap collection that also
takes smdebug's calls (include, add_tensor_name, add_module_tensors / add_block_tensors /
add_keras_layer, save_config and reduction_config given as smdebug objects or dicts) and matches
its regexes against smdebug's spelling of tensor names too ("relu_output_0" for "relu/output_0")."""
from __future__ import annotations

import re
import weakref
from typing import Any, List, Optional, Tuple

from ... import collections as _tt
from ...save_config import SaveConfig as _TTSaveConfig
from .reduction_config import to_tensortap
from .save_config import SaveConfig


_LAYER_TENSOR = re.compile(r"/(input|output)_\d+$")


class CollectionKeys:
    DEFAULT = "default"
    ALL = "all"
    INPUTS = "inputs"
    OUTPUTS = "outputs"
    WEIGHTS = "weights"
    GRADIENTS = "gradients"
    LOSSES = "losses"
    BIASES = "biases"
    LAYERS = "layers"
    SM_METRICS = "sm_metrics"
    OPTIMIZER_VARIABLES = "optimizer_variables"
    TENSORFLOW_SUMMARIES = "tensorflow_summaries"
    METRICS = "metrics"
    HYPERPARAMETERS = "hyperparameters"
    PREDICTIONS = "predictions"
    LABELS = "labels"
    FEATURE_IMPORTANCE = "feature_importance"
    AVERAGE_SHAP = "average_shap"
    FULL_SHAP = "full_shap"
    TREES = "trees"


class Collection(_tt.Collection):
    """`Collection(name, include_regex=None, tensor_names=None, reduction_config=None,
    save_config=None, save_histogram=True)` (smdebug's order), usable wherever tt.Collection is."""

    _hook: Optional["weakref.ref[Any]"]  # the hook it was bound to
    _pending: List[Tuple[Any, bool, bool]]  # layers (layer, inputs, outputs) waiting for the model's names
    save_histogram: bool

    def __init__(self, name: str, include_regex: Any = None, tensor_names: Any = None, reduction_config: Any = None,
                 save_config: Any = None, save_histogram: bool = True, categories: Optional[Tuple[str, ...]] = None,
                 description: str = "") -> None:
        object.__setattr__(self, "_hook", None)
        object.__setattr__(self, "_pending", [])
        object.__setattr__(self, "save_histogram", save_histogram)  # TensorBoard export decides histograms
        regex = (include_regex,) if isinstance(include_regex, str) else tuple(include_regex or ())
        super().__init__(name, regex, frozenset(tensor_names or ()), save_config, reduction_config, categories,
                         description)

    @classmethod
    def like(cls, c: _tt.Collection) -> "Collection":
        """A copy of a tensortap collection (a built-in one) as this class."""
        return cls(c.name, c.include_regex, c.tensor_names, c.reduction_config, c.save_config, True, c.categories,
                   c.description)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "save_config" and value is not None and not isinstance(value, _TTSaveConfig):
            value = SaveConfig.parse(value)
        if name == "save_config" and isinstance(value, SaveConfig) and self._hook is not None:
            hook = self._hook()
            if hook is not None:
                value = value.merged_with(hook.save_config)  # modes it does not set: the hook's
        if name == "reduction_config":
            value = to_tensortap(value)
        object.__setattr__(self, name, value)
        if name in ("save_config", "reduction_config") and getattr(self, "_listeners", None) is not None:
            self.changed()

    def includes(self, name: str, category: str) -> bool:
        if super().includes(name, category):
            return True
        if self._pattern is None or (self.categories is not None and category not in self.categories):
            return False
        if category == "gradients" and _LAYER_TENSOR.search(name):
            return False  # smdebug had no gradients of layer outputs: its regexes never meant them
        from .trials import smdebug_name

        return self._pattern.search(smdebug_name(name)) is not None

    # ---- smdebug's calls ------------------------------------------------------------------
    def include(self, t: Any) -> "Collection":
        super().include([x for x in _flat(t)] if isinstance(t, list) else t)
        return self

    @property
    def modules(self) -> List[Tuple[Any, bool, bool]]:
        return list(self._pending)

    def add_module_tensors(self, module: Any, inputs: bool = False, outputs: bool = True) -> None:
        """Save the inputs and/or outputs of this layer (a torch module, Gluon block or Keras layer
        of the registered model): resolved to its name once the model is registered."""
        self._pending.append((module, inputs, outputs))
        hook = self._hook() if self._hook is not None else None
        if hook is not None:
            hook.resolve_layers()

    add_block_tensors = add_module_tensors

    def add_keras_layer(self, layer: Any, inputs: bool = False, outputs: bool = True) -> None:
        self.add_module_tensors(layer, inputs, outputs)

    def resolve(self, names: dict) -> None:
        """Turn pending layers into regexes, given {id(layer): name} of the registered model."""
        regex = []
        keep = []
        for layer, inputs, outputs in self._pending:
            name = names.get(id(layer))
            if name is None:
                keep.append((layer, inputs, outputs))
                continue
            kinds = [k for k, on in (("input", inputs), ("output", outputs)) if on]
            if kinds:
                regex.append(rf"^{re.escape(name)}(#\d+)?/({'|'.join(kinds)})_\d+$")
        object.__setattr__(self, "_pending", keep)
        if regex:
            self.include(regex)

    def bind(self, hook: Any) -> None:
        object.__setattr__(self, "_hook", weakref.ref(hook))

    def to_json_dict(self) -> dict:
        return {"name": self.name, "include_regex": list(self.include_regex), "tensor_names": sorted(self.tensor_names),
                "save_histogram": self.save_histogram}

    def __repr__(self) -> str:
        return f"<class Collection: name={self.name}>"


def _flat(items: List[Any]) -> List[str]:
    out: List[str] = []
    for it in items:
        out += _flat(it) if isinstance(it, list) else [it]
    return out
