"""`tt.Capture`: everything a framework adapter may use of tensortap while a model trains.

The Hook gives each adapter one object satisfying this protocol (`Adapter.session`); the adapter
touches the core only through it, the `tensortap.capture.quiet` context and the public value
types it names (Collection, LayerInfo, ModeKeys). A training iteration goes:

    session.begin_step(TRAIN)                        # at the framework's step boundary
    if session.wants("weights"):                     # cheap: a frozenset lookup
        session.capture_many((name, p, "weights") for name, p in params)
    ...                                              # layer hooks: session.capture(name, t, "outputs")
    session.end_step()                               # or simply the next begin_step

On a step no collection saves, `wants` is False for every category and the adapter does nothing
else, so an unsaved step costs a counter. What the session does with a captured tensor (copy it,
reduce it, pair it with its gradient) it decides from the hook's collections; the adapter turns
framework tensors into numpy when asked (`Adapter.to_numpy`, `Adapter.reduce_many`). Failures
inside an adapter go to `report_error`: tensortap never stops the user's training.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from ..collections import Collection
    from ..layers import LayerInfo
    from ..modes import ModeKeys

#: a mode as callers give it: tt.modes.TRAIN, "train", "TRAIN", or None (the framework's own / TRAIN)
ModeArg = Union["ModeKeys", str, None]
#: one tensor to capture: (name, framework tensor or array, category)
CaptureItem = Tuple[str, Any, str]


@runtime_checkable
class Deferred(Protocol):
    """A value computed later, off the training thread or on the device: `Adapter.reduce_many` and
    `Adapter.vector_reduce` may return one instead of a float64 vector. The session resolves it
    (`result()`) before the step goes to the writer, and holds at most one step back for it."""

    def done(self) -> bool:
        """True once `result()` returns without waiting."""

    def result(self) -> Any:
        """The value (a 1-D float64 vector, or what converts to one); may wait for it."""


class Capture(Protocol):
    """What a framework adapter uses of tensortap: steps, selection, capture, errors, layers."""

    # ---- the current step ---------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The global step (counted from 0 across modes; -1 before the first step begins)."""

    @property
    def mode(self) -> "ModeKeys":
        """The mode of the current step (TRAIN, EVAL, PREDICT)."""

    @property
    def mode_step(self) -> int:
        """The step's number within its mode."""

    @property
    def saving(self) -> bool:
        """True when some collection saves the current step."""

    @property
    def closed(self) -> bool:
        """True once the run is closed (or disowned by a forked child): capture nothing more."""

    # ---- step boundaries ------------------------------------------------------------------------
    def begin_step(self, mode: ModeArg = None, *, step: Optional[int] = None) -> None:
        """Start the next step (the previous one goes to the writer). `step` numbers it within its
        mode (it must grow; the current number again continues the current step). May raise
        tt.StopTraining when a rule asked training to stop and the adapter stops that way."""

    def end_step(self) -> None:
        """Hand the current step to the writer now instead of at the next begin_step."""

    def drive_steps(self, modes: Optional[Iterable[Union["ModeKeys", str]]] = None) -> None:
        """Steps of `modes` (default all) begin only at a driver's begin_step: the adapter no longer
        starts them itself (see `is_driven`)."""

    def is_driven(self, mode: ModeArg = None) -> bool:
        """Does a driver begin the steps of `mode`? Ask at a would-be step boundary; begin a step
        yourself only when this is False."""

    def capture_gradients(self) -> int:
        """Capture the parameters' gradients as they are now (drivers call it just before the
        optimizer step); returns how many were kept."""

    def take_stop_request(self) -> Optional[str]:
        """The reason a rule (or request_stop) asked training to stop, or None; taking it clears it."""

    @property
    def stop_requested(self) -> Optional[str]:
        """The pending stop reason, left in place (a Keras callback sets model.stop_training on it)."""

    # ---- what is wanted -------------------------------------------------------------------------
    def wants(self, category: str) -> bool:
        """Should tensors of `category` be captured at the current step? The cheap first question
        of every framework callback: `selects(category=category)` as one frozenset lookup."""

    def selects(self, name: Optional[str] = None, category: Optional[str] = None, *,
                by_name: bool = False) -> bool:
        """Does a collection that saves the current step select `name` (of `category`)? None for a
        name or category means any. `by_name=True` counts only collections that pick tensors by
        name (regexes, tensor names), not those that take a whole category ("gradients")."""

    def may_select(self, name: Optional[str] = None, category: Optional[str] = None, *,
                   by_name: bool = False) -> bool:
        """`selects` at any step, whatever the save configs say: decides which framework hooks are
        worth installing at attach time."""

    def collection(self, name: str) -> Optional["Collection"]:
        """The hook's collection called `name`, or None."""

    # ---- capturing ------------------------------------------------------------------------------
    def capture(self, name: str, tensor: Any, category: str, extra_collections: Sequence[str] = ()) -> bool:
        """Store `tensor` (a framework tensor or an array) under `name` if a saving collection
        selects it; True if it was kept. Errors are reported, never raised (except bad input)."""

    def capture_many(self, items: Iterable[CaptureItem]) -> int:
        """`capture` for several (name, tensor, category) at once: their reductions are computed in
        one `Adapter.reduce_many` call. Returns how many were kept."""

    def needs_gradient(self, name: str) -> bool:
        """Does a reduction of `name`, captured this step, wait for its gradient? Then capture
        "gradients/<name>" (category "gradients") even if no collection keeps it."""

    def record_loss(self, loss: Any, name: str = "loss") -> None:
        """Record a loss (a framework scalar or a number) in "losses", kept on every saved step."""

    # ---- errors, layers, tokens -----------------------------------------------------------------
    def report_error(self, what: str, exc: BaseException) -> None:
        """Report a failure inside tensortap (`what` failed with `exc`): logged once per kind,
        counted, recorded in the run; training goes on."""

    def describe_layers(self, layers: Iterable["LayerInfo"]) -> None:
        """Record what each layer is (class, kind), once per layer: at attach, never per step."""

    def set_tokens(self, tokens: Any) -> None:
        """Token strings of the batch about to run (one list per sequence), saved as
        attention/tokens beside the attention of every step that saves attention; None clears."""
