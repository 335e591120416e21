"""Training modes: steps are counted globally and separately per mode."""
from __future__ import annotations

import enum
from typing import Optional, Union, overload


class ModeKeys(str, enum.Enum):
    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "predict"
    GLOBAL = "global"

    def __str__(self) -> str:
        return self.value


TRAIN = ModeKeys.TRAIN
EVAL = ModeKeys.EVAL
PREDICT = ModeKeys.PREDICT
GLOBAL = ModeKeys.GLOBAL
ALL_MODES = (TRAIN, EVAL, PREDICT, GLOBAL)


@overload
def to_mode(mode: Union[ModeKeys, str]) -> ModeKeys: ...
@overload
def to_mode(mode: None) -> None: ...
@overload
def to_mode(mode: Union[ModeKeys, str, None]) -> Optional[ModeKeys]: ...


def to_mode(mode: Union[ModeKeys, str, None]) -> Optional[ModeKeys]:
    """Accept a ModeKeys, its value ("train") or its name ("TRAIN"); None stays None."""
    if mode is None or isinstance(mode, ModeKeys):
        return mode
    from .errors import ConfigError

    text = str(mode).lower()
    for m in ModeKeys:
        if m.value == text:
            return m
    raise ConfigError(
        f"unknown mode {mode!r}: use one of tt.modes.TRAIN, EVAL, PREDICT, GLOBAL "
        f"(or the strings {[m.value for m in ModeKeys]})"
    )
