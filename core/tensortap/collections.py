"""Collections: named groups of tensors, each with its own save and reduction settings.

A captured tensor arrives with a category from the adapter ("weights", "gradients",
"outputs", ...). A collection includes it when the collection's name is that category
(the built-ins), when one of its regexes matches the tensor name, or when the name is
listed in `tensor_names`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, Iterable, List, Optional, Tuple, Union

from . import plugins
from .errors import ConfigError
from .reductions import ReductionConfig
from .save_config import SaveConfig

#: Categories adapters tag captured tensors with; each is also a built-in collection.
CATEGORIES = ("weights", "biases", "gradients", "inputs", "outputs", "losses", "metrics", "scalars")
#: Categories of scalar values, always stored whole whatever the reduction_config (their reductions
#: too, if asked for): a loss kept only as reductions would leave loss rules nothing to read.
WHOLE_VALUE_CATEGORIES = frozenset({"losses", "metrics", "scalars"})


@dataclass
class Collection:
    """`tt.Collection("outputs", include_regex=["conv.*"], save_config=tt.SaveConfig(save_interval=5))`.

    `categories` limits which captured tensors the regexes are tried on (None: all).
    """

    name: str
    include_regex: Tuple[str, ...] = ()
    tensor_names: FrozenSet[str] = frozenset()
    save_config: Optional[SaveConfig] = None
    reduction_config: Optional[ReductionConfig] = None
    categories: Optional[Tuple[str, ...]] = None
    description: str = ""
    _pattern: Optional["re.Pattern"] = field(default=None, repr=False, compare=False)
    _listeners: List[Callable[[], None]] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a collection needs a non-empty string name, got {self.name!r}")
        if isinstance(self.include_regex, str):
            self.include_regex = (self.include_regex,)
        self.include_regex = tuple(self.include_regex or ())
        self.tensor_names = frozenset(self.tensor_names or ())
        if self.categories is not None:
            self.categories = tuple(self.categories)
        self._pattern = _compile(self.name, self.include_regex)
        if self.save_config is not None and not isinstance(self.save_config, SaveConfig):
            raise ConfigError(f"collection {self.name!r}: save_config must be a tt.SaveConfig")
        if self.reduction_config is not None and not isinstance(self.reduction_config, ReductionConfig):
            raise ConfigError(f"collection {self.name!r}: reduction_config must be a tt.ReductionConfig")

    def include(self, regex: Union[str, Iterable[str]]) -> "Collection":
        """Add tensor-name regexes (one or a list) to this collection, also after the hook was made:
        `hook.get_collection("relu_activations").include("relu.*")`; the hook picks the change up."""
        new = (regex,) if isinstance(regex, str) else tuple(regex)
        if not all(isinstance(r, str) for r in new):
            raise ConfigError(f"collection {self.name!r}: include() takes regex strings, got {regex!r}")
        pattern = _compile(self.name, self.include_regex + new)
        self.include_regex, self._pattern = self.include_regex + new, pattern
        self.changed()
        return self

    def add_tensor_name(self, name: str) -> "Collection":
        """Add one exact tensor name to this collection."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"collection {self.name!r}: tensor names are non-empty strings, got {name!r}")
        self.tensor_names = self.tensor_names | {name}
        self.changed()
        return self

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call `fn()` after include()/add_tensor_name() (the Hook forgets what it decided per name)."""
        self._listeners.append(fn)

    def changed(self) -> None:
        """Tell the hook(s) using this collection that it changed (after setting its
        reduction_config, say): they decide again what to store of each tensor."""
        for fn in list(self._listeners):
            fn()

    @property
    def selects_by_name(self) -> bool:
        """True when this collection picks tensors by name (include_regex or tensor_names), not
        only by being a category's own collection ("gradients")."""
        return self._pattern is not None or bool(self.tensor_names)

    def matches_name(self, name: str) -> bool:
        """Is `name` one of tensor_names, or matched by include_regex (whatever its category)?"""
        return name in self.tensor_names or (self._pattern is not None and self._pattern.search(name) is not None)

    def wants_category(self, category: str) -> bool:
        """Could this collection include some tensor of `category`?"""
        if category == self.name:
            return True
        if not self.selects_by_name:
            return False
        return self.categories is None or category in self.categories

    def includes(self, name: str, category: str) -> bool:
        if category == self.name or name in self.tensor_names:
            return True
        if self._pattern is None or (self.categories is not None and category not in self.categories):
            return False
        return self._pattern.search(name) is not None


def _compile(name: str, regexes: Tuple[str, ...]) -> Optional["re.Pattern"]:
    if not regexes:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in regexes))
    except re.error as e:
        raise ConfigError(f"collection {name!r}: invalid include_regex {list(regexes)}: {e}") from None


def builtin_collections() -> Iterable[Collection]:
    docs = {
        "weights": "parameters that are not biases, named as the framework names them",
        "biases": "bias parameters",
        "gradients": "gradients of parameters (gradients/<name>), before the optimizer applies them",
        "inputs": "inputs of layers (<layer>/input_<i>)",
        "outputs": "outputs of layers (<layer>/output_<i>)",
        "losses": "losses recorded with record_loss / register_loss",
        "metrics": "metrics reported by the framework (e.g. Keras logs)",
        "scalars": "values saved with save_scalar",
        # Shared by several framework plugins, so the core owns them (two plugins may not register one name):
        "attention": ("attention probabilities attention/<layer>, (batch, heads, query, key); tokens in "
                      "attention/tokens"),
        "feature_maps": ("Grad-CAM during training: gradcam/<layer>/{activations,gradients,cam,targets,scores}, "
                         "gradcam/images"),
    }
    return [Collection(n, description=d) for n, d in docs.items()]


plugins.add_table(plugins.Table("collections", "tensortap_register_collections", Collection, "tt.Collection"))

from .hookspecs import hookimpl  # noqa: E402 - the built-in collections are a plugin too


@hookimpl
def tensortap_register_collections():
    return list(builtin_collections())
