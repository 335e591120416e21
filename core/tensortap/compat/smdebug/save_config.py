"""smdebug's SaveConfig and SaveConfigMode, as tensortap save configs with smdebug's meanings.

smdebug saves a step when it is listed in `save_steps`, or when it lies in [start_step, end_step)
and `step % save_interval == 0` (the interval counts from step 0, not from start_step; listed
steps are saved even outside the range); `save_interval` defaults to 500. tensortap's own
SaveConfigMode counts the interval from start_step and keeps listed steps inside the range, so
these subclasses override `should_save` and the Hook uses them unchanged.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Union

from ... import save_config as _tt
from ...errors import ConfigError
from ...modes import ALL_MODES, ModeKeys, to_mode

DEFAULT_SAVE_INTERVAL = 500


def _int(name: str, value: Any) -> Optional[int]:
    """smdebug accepts ints and their strings ("10"), as its JSON configuration carries them."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _steps(value: Any) -> tuple:
    """A list of steps, or smdebug's comma-separated string "1,2,3"."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in (x.strip() for x in value.split(",")) if v]
    if isinstance(value, int):
        value = [value]
    return tuple(_int("save_steps", v) for v in value)


class SaveConfigMode(_tt.SaveConfigMode):
    """`SaveConfigMode(save_interval=None, start_step=None, end_step=None, save_steps=None)`:
    smdebug's argument order, defaults and step rule (see the module docstring)."""

    save_interval: int  # smdebug's default when not given

    def __init__(self, save_interval: Union[int, str, None] = None, start_step: Union[int, str, None] = None,
                 end_step: Union[int, str, None] = None, save_steps: Optional[Iterable[int]] = None) -> None:
        interval = _int("save_interval", save_interval)
        super().__init__(DEFAULT_SAVE_INTERVAL if interval is None else interval, _steps(save_steps),
                         _int("start_step", start_step) or 0, _int("end_step", end_step))

    def should_save(self, step: int) -> bool:
        if step in self.save_steps:
            return True
        if step < self.start_step or (self.end_step is not None and step >= self.end_step):
            return False
        return step % self.save_interval == 0

    @classmethod
    def from_dict(cls, params: Optional[Mapping[str, Any]], default_values: Optional[Mapping[str, Any]] = None
                  ) -> Optional["SaveConfigMode"]:
        if params is None:
            return None
        d = dict(default_values or {})
        return cls(**{k: params.get(k, d.get(k)) for k in ("save_interval", "start_step", "end_step", "save_steps")})

    def to_json_dict(self) -> Dict[str, Any]:
        return {"save_interval": self.save_interval, "save_steps": list(self.save_steps),
                "start_step": self.start_step, "end_step": self.end_step}

    def __repr__(self) -> str:
        return (f"<class SaveConfig: save_interval={self.save_interval}, save_steps={list(self.save_steps)}, "
                f"start_step={self.start_step}, end_step={self.end_step}>")


ModeArg = Union[ModeKeys, str]


class SaveConfig(_tt.SaveConfig):
    """`SaveConfig(mode_save_configs=None, save_interval=None, start_step=None, end_step=None,
    save_steps=None)`: one SaveConfigMode for every mode, or per mode
    `{smd.modes.TRAIN: SaveConfigMode(...), ...}` (missing modes: the defaults)."""

    def __init__(self, mode_save_configs: Optional[Mapping[ModeArg, Optional[_tt.SaveConfigMode]]] = None,
                 save_interval: Union[int, str, None] = None, start_step: Union[int, str, None] = None,
                 end_step: Union[int, str, None] = None, save_steps: Optional[Iterable[int]] = None) -> None:
        if mode_save_configs is None:
            base = SaveConfigMode(save_interval, start_step, end_step, save_steps)
            modes: Dict[ModeArg, _tt.SaveConfigMode] = {m: base for m in ALL_MODES}
        else:
            modes = {m: SaveConfigMode() for m in ALL_MODES}
            for mode, cfg in mode_save_configs.items():
                if cfg is None:
                    continue
                if not isinstance(cfg, _tt.SaveConfigMode):
                    raise ConfigError(f"mode_save_configs values must be SaveConfigMode objects, got {cfg!r}")
                modes[to_mode(mode)] = cfg
        super().__init__(mode_save_configs=modes)
        #: the modes given in mode_save_configs (None: every mode was set by the arguments)
        self.explicit = None if mode_save_configs is None else {to_mode(m) for m, c in mode_save_configs.items()
                                                                 if c is not None}

    @property
    def mode_save_configs(self) -> Dict[ModeKeys, _tt.SaveConfigMode]:
        return {m: self.for_mode(m) for m in ALL_MODES}

    def get_save_config(self, mode: ModeArg) -> _tt.SaveConfigMode:
        return self.for_mode(mode)

    def should_save_step(self, mode: ModeArg, step_num: int) -> bool:
        return self.should_save(mode, step_num)

    def merged_with(self, default: _tt.SaveConfig) -> _tt.SaveConfig:
        """Modes this config did not set taken from `default` (smdebug's merge_default_save_config)."""
        if self.explicit is None:
            return self
        return SaveConfig({m: (self.for_mode(m) if m in self.explicit else default.for_mode(m)) for m in ALL_MODES})

    @classmethod
    def parse(cls, obj: Any) -> _tt.SaveConfig:
        """None, a SaveConfig, a SaveConfigMode (every mode) or a {mode: SaveConfigMode} dict."""
        if obj is None:
            return cls()
        if isinstance(obj, _tt.SaveConfig):
            return obj
        if isinstance(obj, _tt.SaveConfigMode):
            return cls({m: obj for m in ALL_MODES})
        if isinstance(obj, dict):
            return cls(obj)
        raise ConfigError(f"save_config must be a SaveConfig, a SaveConfigMode or a {{mode: SaveConfigMode}} dict, "
                          f"got {type(obj).__name__}")

    def to_json_dict(self) -> Dict[str, Any]:
        return {m.name: c.to_json_dict() if hasattr(c, "to_json_dict") else None
                for m, c in self.mode_save_configs.items()}
