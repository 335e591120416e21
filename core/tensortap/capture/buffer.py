"""The step buffer: what the current step captured, and steps handed over while their reductions
are still being computed.

Within a step the last capture of a (name, record kind) wins. An item's array may be a
`Deferred` handle (reductions computed off the training thread or on the device); a step with
such items is held when it is handed over, at most one step back, until they are done or the
next step is handed over: steps reach the writer in order, each complete.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ..modes import ModeKeys
from ..store import StepBatch, TensorItem
from .interface import Deferred

OnError = Callable[[str, BaseException], None]


@dataclass
class Pending:
    """An item of a step whose array is still being computed."""

    item: TensorItem
    handle: Deferred


@dataclass
class HeldStep:
    """A step handed over, waiting for its pending items before it goes to the writer."""

    batch: StepBatch
    pending: List[Pending] = field(default_factory=list)

    def ready(self) -> bool:
        return all(p.handle.done() for p in self.pending)

    def resolve(self, on_error: OnError) -> None:
        """Put each pending result in its item; an item whose computation failed is reported and left out."""
        bad = False
        for p in self.pending:
            try:
                p.item.array = np.asarray(p.handle.result(), dtype=np.float64)
            except Exception as e:  # noqa: BLE001
                on_error(f"could not compute the reductions of {p.item.name!r}", e)
                p.item.array = None  # type: ignore[assignment]  # dropped just below
                bad = True
        if bad:
            self.batch.items = [it for it in self.batch.items if it.array is not None]


class StepBuffer:
    """The items of the current step, and the steps handed over but not yet written."""

    def __init__(self) -> None:
        #: the current step's items by (name, kind), None until the step captures something
        self.items: Optional[Dict[Tuple[str, str], TensorItem]] = None
        #: steps handed over, not yet written
        self.held: List[HeldStep] = []
        self._pending: List[Pending] = []

    def add(self, items: Iterable[TensorItem]) -> None:
        """Add items to the current step: an array that is neither numpy nor a Deferred handle is
        made a float64 array; a handle is resolved before the step is written."""
        if self.items is None:
            self.items = {}
        batch = self.items
        for it in items:
            v: Any = it.array
            if not isinstance(v, np.ndarray):
                if hasattr(v, "result"):  # a Deferred (an isinstance check on the protocol costs microseconds)
                    self._pending.append(Pending(it, v))
                else:
                    it.array = np.asarray(v, dtype=np.float64)
            batch[(it.name, it.kind)] = it

    def seal(self, step: int, mode: ModeKeys, mode_step: int) -> None:
        """The current step is over: hold it (with its still pending items) for the writer."""
        items, self.items = self.items, None
        pending, self._pending = self._pending, []
        if items:
            batch = StepBatch(step, mode.value, mode_step, list(items.values()), time.time())
            # an item replaced later in the step is not waited for
            self.held.append(HeldStep(batch, [p for p in pending if items.get((p.item.name, p.item.kind)) is p.item]))

    def ready(self, wait: bool, on_error: OnError) -> Iterator[StepBatch]:
        """The held steps that can go to the writer now, in order, resolved. `wait=False` leaves the
        last one held while its reductions are still being computed (the next step is starting)."""
        held = self.held
        while held:
            h = held[0]
            if not wait and len(held) == 1 and not h.ready():
                return
            held.pop(0)
            if h.pending:
                h.resolve(on_error)
            yield h.batch
