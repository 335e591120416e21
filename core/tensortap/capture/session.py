"""CaptureSession: the capture engine behind a Hook, and the `tt.Capture` its adapters hold.

It runs the step state machine (steps.py), asks the selection what each step keeps
(selection.py), turns captured tensors into store items through the adapter that owns them
(items.py) into the step buffer (buffer.py), and hands finished steps to the run's output.
Failures go to the error reporter: training goes on.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .. import modes as _modes
from ..errors import ConfigError, StopTraining
from ..layers import LayerInfo, layers_record
from ..modes import ModeKeys, to_mode
from ..store import StepBatch, TensorItem
from ..tokens import token_array
from ..vector_reductions import VectorCapture
from .buffer import StepBuffer
from .errors import ErrorReporter
from .interface import CaptureItem, ModeArg
from .items import NUMPY_LIKE, ReductionGroup, numpy_copy
from .selection import Selection, TensorPlan
from .steps import StepClock

if TYPE_CHECKING:  # pragma: no cover
    from ..adapter import Adapter
    from ..collections import Collection
    from ..plugins import Registry
    from .interface import Capture

#: what the session needs of the run it writes (tensortap.output.RunOutput)
Record = Callable[[Dict[str, Any]], None]


class _Held:
    """A value saved before the first step, kept for that step."""

    __slots__ = ("array", "extra", "always")

    def __init__(self, array: np.ndarray[Any, Any], extra: Tuple[str, ...], always: bool) -> None:
        self.array, self.extra, self.always = array, extra, always


class CaptureSession(StepClock):
    """Implements `tt.Capture` for one Hook (see interface.py for each method's contract).

    `step_done` receives each finished step, `record` adds an index record to the run (making its
    writer), `reporter` reports failures. `lock` guards the step buffer and step boundaries (a
    backward pass may capture from another thread)."""

    def __init__(self, selection: Selection, registry: "Registry", reporter: ErrorReporter,
                 step_done: Callable[[StepBatch], None], record: Record) -> None:
        super().__init__()
        self.lock = threading.RLock()
        self.selection = selection
        self.reporter = reporter
        self.adapter: Optional["Adapter"] = None
        #: layer name -> LayerInfo of every layer described so far
        self.layers: Dict[str, LayerInfo] = {}
        self._registry = registry
        self._step_done = step_done
        self._record = record
        self._buffer = StepBuffer()
        self._vectors = VectorCapture(self.report_error)  # plugin vector reductions of this step
        self._closed = False
        # read on every callback: the selection's active collections and wanted categories, and
        # whether a capture must begin a step first (none begun yet, or set_mode switched modes)
        self._active: Tuple["Collection", ...] = ()
        self._wanted: FrozenSet[str] = frozenset()
        self._needs_begin = True
        self._mode_changed = False
        self._plans = selection.plans
        self._converters: Dict[type, Optional["Adapter"]] = {}  # value type -> the adapter converting it
        self._aux: Dict[str, "Adapter"] = {}  # adapters of other frameworks, for values the user saves
        self._tokens: Optional[np.ndarray[Any, Any]] = None  # set_tokens: saved beside attention until replaced
        self._early: Dict[Tuple[str, str], _Held] = {}  # saved before the first step, for it

    # ---- wiring (the Hook) ---------------------------------------------------------------------
    def set_adapter(self, adapter: Optional["Adapter"]) -> None:
        """The adapter whose framework's tensors this session captures (register, register_loss)."""
        with self.lock:
            self.adapter = adapter
            self._converters.clear()

    def collections_changed(self) -> None:
        """A collection gained regexes or names (`get_collection(name).include(...)`): selections
        are decided again, and the attached adapter is told (it may need hooks it did not install)."""
        with self.lock:
            self.selection.forget()
            self._sync()
            adapter = self.adapter
        if adapter is not None:
            try:
                adapter.collections_changed()
            except Exception as e:  # noqa: BLE001
                self.report_error("could not apply the changed collections", e)

    def close(self) -> None:
        """Capture nothing more (the Hook closed the run, or a forked child disowned it)."""
        self._closed = True

    def _sync(self) -> None:
        sel = self.selection
        self._active, self._wanted = sel.active, sel.wanted

    # ---- the current step ----------------------------------------------------------------------
    @property
    def saving(self) -> bool:
        return bool(self._active)

    @property
    def closed(self) -> bool:
        return self._closed

    def set_mode(self, mode: ModeArg) -> None:
        """Fix the mode (None: the framework's own again); it takes effect at the next step."""
        new = to_mode(mode)
        if self._early and self.step < 0 and (new or _modes.TRAIN) != (self.user_mode or _modes.TRAIN):
            self.begin_step()  # values saved before the first step, in the old mode, make that step
        self.user_mode = new
        # An adapter starts the switched step with its next forward pass; a save made before that
        # (a manual loop without an adapter) starts it itself. Starting it here would leave an
        # empty phantom step when an adapter follows.
        self._mode_changed = self.user_mode is not None and self.user_mode != self.mode and self.step >= 0
        self._needs_begin = self.step < 0 or self._mode_changed

    # ---- step boundaries ----------------------------------------------------------------------
    def begin_step(self, mode: ModeArg = None, *, step: Optional[int] = None) -> None:
        if self._closed:
            return
        if step is not None and self.continues(mode, int(step)):
            self._prepare_driven(self.mode, first_pass=False)  # another pass of the current step
            return
        with self.lock:
            self._hand_over(wait=False)
            problem = self.advance(mode, step)
            if problem is not None:
                self.report_error(*problem)
            self._mode_changed = self._needs_begin = False
            sel = self.selection
            sel.begin(self.mode, self.mode_step)
            self._active, self._wanted = sel.active, sel.wanted
            if self._early:
                self._save_held()
            reason = None
            if not self.driven and self._stop_reason is not None:  # a driver takes stop requests itself
                reason = self.take_stop()
        if self.driven:
            self._prepare_driven(self.mode, first_pass=True)
        if self._tokens is not None and "attention" in self._wanted:
            self.capture("attention/tokens", self._tokens, "attention")
        if reason is not None:
            self.reporter.event("stop_requested", reason)
            if self.adapter is None:
                raise StopTraining(reason)
            self.adapter.stop_training(reason)

    def _prepare_driven(self, mode: ModeKeys, first_pass: bool) -> None:
        """A driver began (or continued) a step of a mode it drives: the adapter sets the step up."""
        if mode in self.driven and self.adapter is not None:
            try:
                self.adapter.start_driven_step(first_pass=first_pass)
            except Exception as e:  # noqa: BLE001
                self.report_error("could not prepare the step's capture", e)

    def end_step(self) -> None:
        with self.lock:
            self.hand_over()
            if self.driven:  # nothing is captured until the driver's next begin_step
                self.selection.clear()
                self._sync()

    def hand_over(self) -> None:
        """Queue the current step for the writer and wait for its reductions (end_step, flush, close)."""
        with self.lock:
            if self._early and self.step < 0 and not self._closed:
                self.begin_step()  # values were saved but no step ever began: they make step 0
            self._hand_over()

    def _hand_over(self, wait: bool = True) -> None:
        """Queue the current step. A step whose reductions are still being computed (off the
        training thread) waits, unless `wait`, until they are ready or the next step is handed
        over: at most one step is held back; steps reach the writer in order."""
        if self.adapter is not None and self.step >= 0 and not self._closed:
            # what the adapter still holds belongs to this step, even after a set_mode switch
            needs_begin, self._needs_begin = self._needs_begin, False
            try:
                self.adapter.finish_step()
            except Exception as e:  # noqa: BLE001
                self.report_error("could not finish the step", e)
            finally:
                self._needs_begin = needs_begin
        self._vectors.clear()  # values whose gradient never came (no backward pass this step)
        buffer = self._buffer
        if buffer.items is None and not buffer.held:  # nothing captured, nothing waiting: an unsaved step
            return
        buffer.seal(self.step, self.mode, self.mode_step)
        for batch in buffer.ready(wait, self.report_error):
            if batch.items:
                self._step_done(batch)

    def capture_gradients(self) -> int:
        if self._closed or self.adapter is None or not self.wants("gradients"):
            return 0
        try:
            return self.adapter.capture_gradients()
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self.report_error("could not capture the gradients", e)
            return 0

    def take_stop_request(self) -> Optional[str]:
        with self.lock:
            reason = self.take_stop()
        if reason is not None:
            self.reporter.event("stop_requested", reason)
        return reason

    # ---- what is wanted ----------------------------------------------------------------------
    def wants(self, category: str) -> bool:
        return category in self._wanted

    def selects(self, name: Optional[str] = None, category: Optional[str] = None, *, by_name: bool = False) -> bool:
        return self.selection.selects(name, category, by_name)

    def may_select(self, name: Optional[str] = None, category: Optional[str] = None, *,
                   by_name: bool = False) -> bool:
        return self.selection.may_select(name, category, by_name)

    def collection(self, name: str) -> Optional["Collection"]:
        return next((c for c in self.selection.collections if c.name == name), None)

    def needs_gradient(self, name: str) -> bool:
        return self._vectors.needs_gradient(name)

    # ---- capturing ------------------------------------------------------------------------------
    def capture(self, name: str, tensor: Any, category: str, extra_collections: Sequence[str] = ()) -> bool:
        try:
            return self._capture(name, tensor, category, extra_collections)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self.report_error(f"could not capture {name!r}", e)
            return False

    def capture_many(self, items: Iterable[CaptureItem]) -> int:
        try:
            if self._closed:
                return 0
            if self._needs_begin:
                self.begin_step()
            items = list(items)
            if self._vectors.waiting:
                self._queue([v for n, t, c in items if c == "gradients" for v in self._vectors.on_gradient(n, t)])
            plan = self.selection.plan
            todo = [(n, t, p) for n, t, c in items for p in (plan(n, c),) if p is not None]
            if todo:
                self._store(todo)
            return len(todo)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self.report_error("could not capture a batch of tensors", e)
            return 0

    def _capture(self, name: str, tensor: Any, category: str, extra_collections: Sequence[str] = (),
                 force: bool = False) -> bool:
        if self._closed:
            return False
        if self._needs_begin:
            self.begin_step()
        if category == "gradients" and self._vectors.waiting:
            self._queue(self._vectors.on_gradient(name, tensor))
        if force or extra_collections:
            plan = self.selection.make_plan(name, category, extra_collections, force)
        else:
            try:
                plan = self._plans[(name, category, self.selection.key)]
            except KeyError:
                plan = self.selection.plan(name, category)
        if plan is None:
            return False
        self._store(((name, tensor, plan),))
        return True

    def _store(self, todo: Iterable[Tuple[str, Any, TensorPlan]]) -> None:
        """Copy (raw) and reduce what the plans ask for; the reductions of one adapter, one
        configuration, go to the adapter in one `reduce_many` call."""
        items: List[TensorItem] = []
        groups: Dict[Tuple[int, str, int], ReductionGroup] = {}
        for name, tensor, plan in todo:
            adapter = self._converter(tensor)
            if plan.raw:
                items.append(TensorItem(name, "value", plan.collections, numpy_copy(adapter, tensor, name)))
            if plan.vectors:
                items.extend(self._vectors.on_value(name, tensor, adapter, plan.vectors, plan.collections))
            if plan.reductions:
                key = (id(adapter), plan.kind, plan.bins)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = ReductionGroup(adapter, plan.reductions, plan.bins, plan.kind)
                group.add(name, plan.collections, tensor)
        for group in groups.values():
            items.extend(group.reduce())
        self._queue(items)

    def _queue(self, items: List[TensorItem]) -> None:
        if items:
            with self.lock:
                self._buffer.add(items)

    def _converter(self, value: Any) -> Optional["Adapter"]:
        """The adapter that turns `value` into numpy (None: numpy does), decided once per type: the
        session's own adapter for its framework's tensors, another framework's for a value the
        user saves from it."""
        try:
            return self._converters[type(value)]
        except KeyError:
            pass
        adapter: Optional["Adapter"] = None
        if not isinstance(value, NUMPY_LIKE):
            if self.adapter is not None and self.adapter.is_tensor(value):
                adapter = self.adapter
            else:
                spec = self._registry.adapter_for(value)
                if spec is not None:
                    adapter = self._aux.get(spec.name)
                    if adapter is None:
                        adapter = self._aux[spec.name] = spec.load()(self)
        self._converters[type(value)] = adapter
        return adapter

    # ---- saves by name (the Hook's record_loss / save_scalar / save_tensor) ----------------------
    def record_loss(self, loss: Any, name: str = "loss") -> None:
        self.save(name, loss, "losses")

    def save(self, name: str, value: Any, category: str, extra: Tuple[str, ...] = (), always: bool = False) -> None:
        """A save asked for by name: it follows the save config of the collections that include
        it; if the hook includes none of them, it is kept on every step the hook saves anything
        (so losses and scalars always land beside the tensors). `always`: on every step."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tensor names must be non-empty strings, got {name!r}")
        if self._closed:
            return
        if self.step < 0:  # before the first step: it belongs to that step, not to one of its own
            return self._hold(name, value, category, extra, always)
        if self._mode_changed:
            self.begin_step()
        if not (always or self._active):  # an unsaved step keeps nothing: the common case, kept cheap
            return
        force = always or not self.selection.collections_of(name, category)  # (the step saves)
        try:
            self._capture(name, value, category, extra, force=force)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self.report_error(f"could not save {name!r}", e)

    def _hold(self, name: str, value: Any, category: str, extra: Tuple[str, ...], always: bool) -> None:
        """Keep a copy of a value saved before the first step, for that step; the last one saved
        under a name wins, as within a step."""
        try:
            arr = numpy_copy(self._converter(value), value, name)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self.report_error(f"could not save {name!r}", e)
            return
        with self.lock:
            self._early[(name, category)] = _Held(arr, extra, always)

    def _save_held(self) -> None:
        """Save the values held for the first step (it has just begun)."""
        early, self._early = self._early, {}
        for (name, category), held in early.items():
            self.save(name, held.array, category, held.extra, held.always)

    # ---- errors, layers, tokens ---------------------------------------------------------------
    def report_error(self, what: str, exc: BaseException) -> None:
        self.reporter.report(what, exc)

    def describe_layers(self, layers: Iterable[LayerInfo]) -> None:
        try:
            with self.lock:
                new = [info for info in layers if self.layers.get(info.name) != info]
                if not new or self._closed:
                    return
                self.layers.update((info.name, info) for info in new)
                self._record(layers_record(new))
        except Exception as e:  # noqa: BLE001 - a description must never stop training
            self.report_error("could not record the model's layer classes", e)

    def set_tokens(self, tokens: Any) -> None:
        self._tokens = None if tokens is None else token_array(tokens)
        if self._tokens is not None and self.step >= 0 and "attention" in self._wanted:
            self.capture("attention/tokens", self._tokens, "attention")


if TYPE_CHECKING:  # pragma: no cover
    def _satisfies_capture(session: CaptureSession) -> "Capture":
        """mypy checks here that a CaptureSession is a tt.Capture."""
        return session
