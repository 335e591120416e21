"""What a framework plugin implements, and the typed spec it registers.

The spec recognises a framework's models and tensors by the modules their classes come
from, so the core never imports a framework to find out, and names the plugin's classes: the
Adapter does the framework-specific work of capture (attach hooks, name parameters and layers,
turn tensors into numpy copies) and reaches the core only through the `tt.Capture` it is given
(`Adapter.session`, tensortap.capture); everything after `to_numpy` is framework-free. The
optional Explainer (tensortap.explain) computes Grad-CAM and attention on demand, without a Hook.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import plugins
from .errors import ConfigError, StopTraining
from .framework_versions import SupportedVersions, check_versions
from .reductions import pack, reduce_numpy

if TYPE_CHECKING:  # pragma: no cover
    from .capture.interface import Capture
    from .vector_reductions import VectorReduction


def _module_matches(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@dataclass(frozen=True)
class AdapterSpec:
    """How the core finds and loads a framework adapter, without importing the framework.

    name:          framework name users pass as `framework=` ("torch")
    model_modules: top-level modules whose classes belong to the framework ("torch",)
    adapter:       "package.module:AdapterClass", imported only when a model needs it
    conformance:   optional "package.module:ConformanceKit" for tests/conformance
    explainer:     optional "package.module:Explainer" (a tensortap.explain.Explainer): Grad-CAM and
                   attention for tt.explain, computed on demand without a Hook
    instrument:    optional "package.module:Instrumentation" for `tensortap run` (zero code change):
                   a class taking the run session, whose `install()` patches the framework once one
                   of `model_modules` is imported (see tensortap.zerocode.session)
    versions:      the framework versions the plugin supports, checked when the adapter loads
    extras:        names of Adapter methods the plugin offers users through the hook:
                   `hook.extra(name)` gives the method bound to the hook's adapter (made if the hook
                   has none yet); tensortap-tensorflow offers "keras_callback", "wrap_tape", ...
    """

    name: str
    model_modules: Tuple[str, ...]
    adapter: str
    description: str = ""
    conformance: Optional[str] = None
    explainer: Optional[str] = None
    instrument: Optional[str] = None
    versions: Tuple[SupportedVersions, ...] = ()
    extras: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if ":" not in self.adapter:
            raise ConfigError(f"AdapterSpec {self.name!r}: adapter must be 'module:Class', got {self.adapter!r}")
        object.__setattr__(self, "model_modules", tuple(self.model_modules))
        object.__setattr__(self, "versions", tuple(self.versions))
        object.__setattr__(self, "extras", (self.extras,) if isinstance(self.extras, str) else tuple(self.extras))
        for e in self.extras:
            if not isinstance(e, str) or not e.isidentifier() or e.startswith("_"):
                raise ConfigError(f"AdapterSpec {self.name!r}: extras are names of public Adapter methods, got {e!r}")
        for v in self.versions:
            if not isinstance(v, SupportedVersions):
                raise ConfigError(f"AdapterSpec {self.name!r}: versions must be tt.SupportedVersions, got {v!r}")

    def recognises(self, obj: Any) -> bool:
        """Is `obj` (a model, layer or tensor) an instance of one of this framework's classes?"""
        try:
            mro = type(obj).__mro__
        except AttributeError:  # pragma: no cover
            return False
        return any(_module_matches(getattr(c, "__module__", "") or "", self.model_modules) for c in mro)

    def load(self) -> type:
        """The Adapter class, after checking the installed framework versions against `versions`
        (a one-time warning outside the supported range, a ConfigError where it cannot work)."""
        check_versions(self.versions, self.adapter)
        return _load_object(self.adapter)

    def framework_missing(self) -> Optional[str]:
        """The framework's top-level module (the first of model_modules) if it is not installed,
        else None; looked up without importing it."""
        module = self.model_modules[0].split(".")[0] if self.model_modules else None
        if module is None:
            return None
        try:
            return module if importlib.util.find_spec(module) is None else None
        except (ImportError, ValueError):  # a broken installation counts as missing
            return module

    def load_explainer(self) -> Optional[type]:
        """The Explainer class (None if the plugin names none), after the version check `load` makes."""
        if self.explainer is None:
            return None
        check_versions(self.versions, self.explainer)
        return _load_object(self.explainer)

    def load_conformance(self):
        return _load_object(self.conformance) if self.conformance else None

    def load_instrument(self):
        return _load_object(self.instrument) if self.instrument else None


plugins.add_table(plugins.Table("adapters", "tensortap_register_adapters", AdapterSpec, "AdapterSpec"))


def _load_object(path: str):
    mod, _, attr = path.partition(":")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Handle:
    """A removable registration (a framework hook handle, a patched method)."""

    def __init__(self, remove) -> None:
        self._remove = remove

    def remove(self) -> None:
        if self._remove is not None:
            fn, self._remove = self._remove, None
            fn()


class Adapter:
    """Base class of framework adapters: one instance per Hook.

    Subclasses implement `attach`, `named_parameters`, `named_layers` and `to_numpy`;
    the rest have working defaults. During training the adapter drives its `session` (a
    `tt.Capture`, see tensortap.capture.interface): `session.begin_step(mode)` at the start of
    each iteration, then `session.wants(category)` / `session.capture(name, tensor, category)` for
    what it sees. An adapter that captures layer inputs/outputs also tells, once per layer (not
    per step), what each layer is: `session.describe_layers([tensortap.layers.LayerInfo.of(name,
    layer)])`, so rules find layers by kind ("relu") rather than by name. docs/writing-a-framework-
    plugin.md walks through a complete one.
    """

    name: str = "base"

    def __init__(self, session: Optional["Capture"]) -> None:
        #: what the adapter captures through (None: made for an explanation, tt.explain)
        self.session = session
        self.handles: List[Handle] = []
        self.model: Any = None

    # ---- required ------------------------------------------------------------------------
    def attach(self, model: Any) -> None:
        """Install the framework hooks on `model`; append removable handles to self.handles."""
        raise NotImplementedError

    def named_parameters(self, model: Any) -> Iterator[Tuple[str, Any]]:
        """(name, tensor) of every trainable parameter, named exactly as the framework does."""
        raise NotImplementedError

    def named_layers(self, model: Any) -> Iterator[Tuple[str, Any]]:
        """(name, layer) of every layer whose inputs/outputs can be captured."""
        raise NotImplementedError

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """A numpy copy that tensortap owns: later in-place updates must not change it."""
        raise NotImplementedError

    # ---- optional, with defaults ----------------------------------------------------------
    def detach(self) -> None:
        while self.handles:
            self.handles.pop().remove()

    def collections_changed(self) -> None:
        """The hook's collections changed after `attach` (a user collection
        filled by `get_collection(name).include(...)`): install what they may now need. Default:
        detach and attach the model again (between steps)."""
        if self.model is not None:
            self.detach()
            self.attach(self.model)

    def finish_step(self) -> None:
        """Called just before the session hands the current step to the writer (next begin_step, end_step,
        flush, close): capture what the adapter still holds for it (e.g. on-device copies not yet
        turned into numpy, gradients no optimizer call picked up). Default: nothing."""

    def start_driven_step(self, first_pass: bool = True) -> None:
        """A driver began a step (`begin_step` for a mode `drive_steps` hands to it): set up
        the step's capture as at a step boundary the adapter finds itself (e.g. the weights).
        `first_pass=False`: the driver continues the current step with another forward/backward pass
        (gradient accumulation); tensors of forward passes are kept from the first pass only.
        Default: nothing."""

    def capture_gradients(self) -> int:
        """Capture the parameters' gradients as they are now (`Capture.capture_gradients`, called
        just before the optimizer step); returns how many were kept."""
        raise ConfigError(f"the {self.name} adapter cannot capture gradients on request; it captures them "
                          "itself at its own step boundaries (do not drive its steps with hook.drive_steps)")

    def rank(self) -> int:
        return 0

    def world_size(self) -> int:
        return 1

    def is_tensor(self, obj: Any) -> bool:
        return not isinstance(obj, (np.ndarray, np.generic, int, float, bool))

    def reduce(self, tensor: Any, names: Iterable[str], bins: int) -> Dict[str, np.ndarray]:
        """Reductions of a framework tensor; override to compute them on the tensor's device."""
        return reduce_numpy(self.to_numpy(tensor), names, bins)

    def reduce_many(self, tensors: Sequence[Any], names: Tuple[str, ...], bins: int) -> List[Any]:
        """Reductions of several tensors (`names` in tensortap.reductions.canonical order), each
        packed into one float64 vector (tensortap.reductions.pack). An item may instead be a handle
        with done()/result() giving that vector later (computed off the training thread or on the
        device without a sync): the session resolves it before the step goes to the writer, so it
        must snapshot what later in-place updates would change. Default: `reduce` on each."""
        return [pack(self.reduce(t, names, bins), names) for t in tensors]

    def hold(self, tensor: Any) -> Any:
        """Keep a captured `tensor` until its gradient arrives later in the step, for a vector
        reduction of both (tensortap.VectorReduction). Default: a numpy copy (whatever the framework
        does to the tensor later); an adapter may keep the tensor itself and check it is unchanged."""
        return self.to_numpy(tensor)

    def vector_reduce(self, reduction: "VectorReduction", tensors: Sequence[Any]) -> Any:
        """`reduction` of `tensors` (the captured value, or what `hold` returned, then its gradient
        when the reduction takes it): a float64 vector, or a handle with done()/result() giving it
        later (see `reduce_many`). Default: the reduction's numpy implementation on numpy copies."""
        return reduction.compute_numpy([t if isinstance(t, np.ndarray) else self.to_numpy(t) for t in tensors])

    def register_loss(self, loss_obj: Any, name: str) -> None:
        raise ConfigError(f"the {self.name} adapter cannot register loss objects; call hook.record_loss(loss) instead")

    def stop_training(self, reason: str) -> None:
        """A rule's stop action takes effect here, at a step boundary. Default: raise StopTraining."""
        raise StopTraining(reason)
