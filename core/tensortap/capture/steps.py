"""The step state machine: which step, in which mode, who begins steps, and whether to stop.

One training iteration is one step, counted from 0 globally and per mode. A caller may number
a step within its mode (a trainer's global_step): numbers must grow, and the current number
again continues the current step (another forward/backward pass of gradient accumulation). The
global step is the clock's own count, unique and increasing across modes, but at least the
caller's number, so a run of one mode keeps the caller's numbers as its global steps too.
"""
from __future__ import annotations

import threading
from typing import Dict, FrozenSet, Iterable, Optional, Tuple, Union

from .. import modes as _modes
from ..errors import ConfigError
from ..modes import ModeKeys, to_mode
from .interface import ModeArg

ALL_STEP_MODES = (_modes.TRAIN, _modes.EVAL, _modes.PREDICT)


class StepClock:
    """The current step and its mode; the modes a driver begins (`drive`); a pending stop request.

    Plain attributes, read on every framework callback: `step` (-1 before the first step),
    `mode`, `mode_step`, `user_mode` (set_mode's override, None: the framework's)."""

    def __init__(self) -> None:
        self.step = -1
        self.mode: ModeKeys = _modes.TRAIN
        self.mode_step = -1
        self.user_mode: Optional[ModeKeys] = None
        self.driven: FrozenSet[ModeKeys] = frozenset()
        self._counters: Dict[ModeKeys, int] = {}
        self._stop_reason: Optional[str] = None
        self._stop_lock = threading.Lock()  # rule results arrive on other threads (one per rules backend)

    def resolve_mode(self, mode: ModeArg) -> ModeKeys:
        """The mode a step begun with `mode` runs in: set_mode's override first, then `mode`, else TRAIN."""
        return self.user_mode or to_mode(mode) or _modes.TRAIN

    def continues(self, mode: ModeArg, step: int) -> bool:
        """Is begin_step(mode, step=step) another pass of the current step (its own number again)?"""
        return self.step >= 0 and self.resolve_mode(mode) == self.mode and step == self.mode_step

    def advance(self, mode: ModeArg, step: Optional[int]) -> Optional[Tuple[str, ConfigError]]:
        """Move to the next step, in the mode a step begun with `mode` runs in (`resolve_mode`),
        numbered `step` within it if given. A number that does not grow is replaced by the next
        free one, so nothing saved is overwritten: that problem is returned, (what, error), for
        the caller to report."""
        mode = self.user_mode or to_mode(mode) or _modes.TRAIN  # resolve_mode, inline: once per step
        last = self._counters.get(mode, -1)
        problem = None
        if step is None:
            number = last + 1
        elif int(step) <= last:
            number = last + 1
            problem = (f"step {int(step)} of mode {mode.value} is not after its step {last}",
                       ConfigError(f"step numbers must grow within a mode; numbered it {last + 1} instead, "
                                   "so that no saved step is overwritten"))
        else:
            number = int(step)
        self.mode_step = number
        self.step = self.step + 1 if step is None else max(self.step + 1, number)
        self.mode = mode
        self._counters[mode] = number
        return problem

    def drive_steps(self, modes: Optional[Iterable[Union[ModeKeys, str]]] = None) -> None:
        """Steps of `modes` (None: TRAIN, EVAL and PREDICT) begin only when a driver says so."""
        driven = frozenset(ModeKeys(to_mode(m)) for m in (ALL_STEP_MODES if modes is None else modes))
        if _modes.GLOBAL in driven:
            raise ConfigError("drive_steps takes tt.modes.TRAIN, EVAL or PREDICT (GLOBAL is not a mode steps run in)")
        self.driven = driven

    def is_driven(self, mode: ModeArg = None) -> bool:
        """Does a driver begin the steps of `mode` (after set_mode's override)?"""
        return bool(self.driven) and self.resolve_mode(mode) in self.driven

    def request_stop(self, reason: str) -> None:
        """Ask training to stop at the next step boundary. While a stop is pending, a later request
        keeps the first reason: live rule results arrive in bursts (a rules process catching up),
        and training must be told the first firing, not the last one before its next boundary."""
        with self._stop_lock:
            if self._stop_reason is None:
                self._stop_reason = reason

    @property
    def stop_requested(self) -> Optional[str]:
        """The pending stop reason, left in place."""
        return self._stop_reason

    def take_stop(self) -> Optional[str]:
        """The pending stop reason, cleared."""
        with self._stop_lock:
            reason, self._stop_reason = self._stop_reason, None
        return reason
