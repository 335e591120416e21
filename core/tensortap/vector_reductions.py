"""Reductions that plugins register: one small float64 vector per captured tensor per saved step.

A plugin returns `VectorReduction` specs from the hook `tensortap_register_reductions` (e.g. an
importance score per channel: activation x gradient summed per channel). Users ask for them by
name in `tt.ReductionConfig(reductions=[...])` beside the built-in scalar reductions; the Hook
computes them where the tensor lives (the framework's own implementation when the plugin gives
one, else numpy) and stores the vector instead of the tensor, as record kind
"reduction:<name>" (readable by every reader: `Tensor.reduction_value(step, name)`).

A reduction of a value and its gradient waits for the gradient (captured as "gradients/<name>"
in the same step); `VectorCapture` pairs them and drops what is still waiting when the step ends.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import plugins
from .errors import ConfigError
from .store import TensorItem

VALUE = "value"
GRADIENT = "gradient"
#: the inputs a reduction may take: the captured value alone, or the value and its gradient
INPUTS = ((VALUE,), (VALUE, GRADIENT))
#: stored name of the gradient of the tensor named `x`: "gradients/x"
GRADIENT_PREFIX = "gradients/"
#: record kind of a vector reduction (the one-record-per-reduction kind every reader knows)
KIND_PREFIX = "reduction:"

Function = Union[str, Callable[..., Any]]
_loaded: Dict[str, Callable[..., Any]] = {}


def _load(ref: Function) -> Callable[..., Any]:
    """The function `ref` names ("package.module:function"), imported once; a callable as it is."""
    if callable(ref):
        return ref
    fn = _loaded.get(ref)
    if fn is None:
        mod, _, attr = ref.partition(":")
        obj: Any = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        fn = _loaded[ref] = obj
    return fn


@dataclass(frozen=True)
class VectorReduction:
    """A plugin-registered reduction giving one small float64 vector per tensor per saved step.

    name:            what users list in tt.ReductionConfig(reductions=[...]) and read back with
                     Tensor.reduction_value(step, name)
    numpy:           "package.module:function" (or the function) computing the vector from numpy
                     arrays: fn(value) or fn(value, gradient); always given
    inputs:          ("value",) or ("value", "gradient") (the gradient of the captured tensor,
                     stored name "gradients/<name>", from the same step)
    implementations: {framework: "package.module:function"} computing it from that framework's
                     tensors where they live (torch: on the tensor's device), returning a 1-D tensor;
                     it must agree with `numpy`
    description:     one line for `tensortap plugins` and the docs
    """

    name: str
    numpy: Function
    inputs: Tuple[str, ...] = (VALUE,)
    implementations: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        from .reductions import REDUCTIONS

        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in ",:/ "):
            raise ConfigError(f"a VectorReduction needs a name without ',', ':', '/' or spaces, got {self.name!r}")
        if self.name in REDUCTIONS:
            raise ConfigError(f"VectorReduction {self.name!r}: the name of a built-in reduction; choose another")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.inputs not in INPUTS:
            raise ConfigError(f"VectorReduction {self.name!r}: inputs must be one of {list(INPUTS)}, "
                              f"got {self.inputs!r}")
        if not (callable(self.numpy) or (isinstance(self.numpy, str) and ":" in self.numpy)):
            raise ConfigError(f"VectorReduction {self.name!r}: numpy must be 'module:function' or a function, "
                              f"got {self.numpy!r}")
        object.__setattr__(self, "implementations", dict(self.implementations))

    @property
    def needs_gradient(self) -> bool:
        return GRADIENT in self.inputs

    @property
    def kind(self) -> str:
        """The record kind its vectors are stored under."""
        return KIND_PREFIX + self.name

    def implementation(self, framework: str) -> Optional[Callable[..., Any]]:
        """The framework's own implementation, or None (then numpy computes it)."""
        ref = self.implementations.get(framework)
        return _load(ref) if ref is not None else None

    def compute_numpy(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """The vector from numpy arrays (the value, then its gradient), as float64, 1-D."""
        return as_vector(self.name, _load(self.numpy)(*arrays))


def as_vector(name: str, value: Any) -> np.ndarray:
    """`value` as a 1-D float64 array, or a ConfigError naming the reduction that returned it."""
    v = np.asarray(value, dtype=np.float64)
    if v.ndim != 1:
        raise ConfigError(f"reduction {name!r} must return a 1-D vector, returned shape {v.shape}")
    return v


plugins.add_table(plugins.Table("reductions", "tensortap_register_reductions", VectorReduction, "tt.VectorReduction"))


def registered() -> Dict[str, VectorReduction]:
    """Every VectorReduction the installed plugins registered, by name."""
    return plugins.get_registry().tables["reductions"]


def lookup(name: str) -> Optional[VectorReduction]:
    """The registered VectorReduction called `name`, or None."""
    return registered().get(name)


OnError = Callable[[str, BaseException], None]


@dataclass
class _Waiting:
    """A captured value whose reductions wait for its gradient."""

    adapter: Any  # the Adapter that converts its tensors, or None (numpy)
    held: Any  # what Adapter.hold returned for the value
    reductions: Tuple[VectorReduction, ...]
    collections: Tuple[str, ...]


class VectorCapture:
    """The vector reductions of one step: those of a value alone are computed when it is captured;
    those that also need its gradient hold the value until "gradients/<name>" is captured, then
    are computed. What still waits when the step ends (no backward pass) is dropped by `clear`."""

    def __init__(self, on_error: OnError) -> None:
        self._on_error = on_error
        self._waiting: Dict[str, _Waiting] = {}

    @property
    def waiting(self) -> bool:
        return bool(self._waiting)

    def needs_gradient(self, name: str) -> bool:
        """Does a reduction of the captured value `name` wait for its gradient this step?"""
        return name in self._waiting

    def on_value(self, name: str, tensor: Any, adapter: Any, reductions: Sequence[VectorReduction],
                 collections: Tuple[str, ...]) -> List[TensorItem]:
        """Compute the value-only reductions of `name` now; keep it for the ones needing its gradient."""
        now = [r for r in reductions if not r.needs_gradient]
        later = tuple(r for r in reductions if r.needs_gradient)
        if later:
            held = adapter.hold(tensor) if adapter is not None else np.array(tensor, copy=True)
            self._waiting[name] = _Waiting(adapter, held, later, collections)
        return self._compute(name, adapter, now, (tensor,), collections)

    def on_gradient(self, gradient_name: str, gradient: Any) -> List[TensorItem]:
        """The reductions waiting for `gradient_name` ("gradients/<name>"), computed now."""
        if not gradient_name.startswith(GRADIENT_PREFIX):
            return []
        name = gradient_name[len(GRADIENT_PREFIX):]
        got = self._waiting.pop(name, None)
        if got is None:
            return []
        return self._compute(name, got.adapter, got.reductions, (got.held, gradient), got.collections)

    def clear(self) -> None:
        self._waiting.clear()

    def _compute(self, name: str, adapter: Any, reductions: Sequence[VectorReduction], tensors: Tuple[Any, ...],
                 collections: Tuple[str, ...]) -> List[TensorItem]:
        out: List[TensorItem] = []
        for r in reductions:
            try:
                if adapter is not None:
                    v = adapter.vector_reduce(r, tensors)
                else:
                    v = r.compute_numpy([np.asarray(t) for t in tensors])
            except Exception as e:  # noqa: BLE001 - reported; training and the other captures go on
                self._on_error(f"could not compute reduction {r.name!r} of {name!r}", e)
                continue
            out.append(TensorItem(name, r.kind, collections, v))  # v may be a Deferred handle
        return out
