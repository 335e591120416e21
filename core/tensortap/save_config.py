"""SaveConfig: on which steps a collection is saved, per mode."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Union

from .errors import ConfigError
from .modes import ALL_MODES, ModeKeys, to_mode

DEFAULT_SAVE_INTERVAL = 100


@dataclass(frozen=True)
class SaveConfigMode:
    """When to save within one mode. Steps are that mode's own step counter."""

    save_interval: Optional[int] = None
    save_steps: tuple = ()
    start_step: int = 0
    end_step: Optional[int] = None

    def __post_init__(self) -> None:
        if self.save_interval is not None and (
            not isinstance(self.save_interval, int) or self.save_interval < 1
        ):
            raise ConfigError(
                f"save_interval must be a positive int, got {self.save_interval!r}; "
                "use save_interval=1 to save every step"
            )
        steps = tuple(sorted(set(int(s) for s in (self.save_steps or ()))))
        if any(s < 0 for s in steps):
            raise ConfigError(f"save_steps must be >= 0, got {list(steps)}")
        object.__setattr__(self, "save_steps", steps)
        if self.start_step is None:
            object.__setattr__(self, "start_step", 0)
        if self.start_step < 0:
            raise ConfigError(f"start_step must be >= 0, got {self.start_step}")
        if self.end_step is not None and self.end_step <= self.start_step:
            raise ConfigError(
                f"end_step ({self.end_step}) must be greater than start_step ({self.start_step}); "
                "end_step is exclusive"
            )

    def should_save(self, step: int) -> bool:
        """True when `step` (a mode step) is to be saved: interval steps and explicit steps."""
        if step < self.start_step or (self.end_step is not None and step >= self.end_step):
            return False
        if self.save_steps and step in self.save_steps:
            return True
        interval = self.save_interval
        if interval is None:
            interval = None if self.save_steps else DEFAULT_SAVE_INTERVAL
        return interval is not None and (step - self.start_step) % interval == 0


ModeArg = Union[ModeKeys, str]


class SaveConfig:
    """Which steps to save: `SaveConfig(save_interval=10)`, `SaveConfig(save_steps=[0, 5])`,
    `start_step`/`end_step` (end exclusive), or a per-mode dict
    `SaveConfig({tt.modes.TRAIN: SaveConfigMode(save_interval=10), tt.modes.EVAL: ...})`.
    """

    def __init__(
        self,
        mode_save_configs: Optional[Mapping[ModeArg, Union[SaveConfigMode, "SaveConfig", dict]]] = None,
        save_interval: Optional[int] = None,
        save_steps: Optional[Iterable[int]] = None,
        start_step: int = 0,
        end_step: Optional[int] = None,
    ) -> None:
        base = SaveConfigMode(save_interval, tuple(save_steps or ()), start_step, end_step)
        self._modes = {m: base for m in ALL_MODES}
        for mode, cfg in (mode_save_configs or {}).items():
            m = to_mode(mode)
            if isinstance(cfg, SaveConfig):
                cfg = cfg.for_mode(m)
            elif isinstance(cfg, dict):
                cfg = SaveConfigMode(**cfg)
            elif not isinstance(cfg, SaveConfigMode):
                raise ConfigError(
                    f"SaveConfig for mode {m.value} must be a SaveConfigMode, SaveConfig or dict, "
                    f"got {type(cfg).__name__}"
                )
            self._modes[m] = cfg

    def for_mode(self, mode: ModeArg) -> SaveConfigMode:
        return self._modes[to_mode(mode)]

    def should_save(self, mode: ModeArg, mode_step: int) -> bool:
        return self._modes[to_mode(mode)].should_save(mode_step)

    def to_dict(self) -> dict:
        return {
            m.value: {
                "save_interval": c.save_interval,
                "save_steps": list(c.save_steps),
                "start_step": c.start_step,
                "end_step": c.end_step,
            }
            for m, c in self._modes.items()
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SaveConfig) and self._modes == other._modes

    def __repr__(self) -> str:
        t = self._modes[ModeKeys.TRAIN]
        return (
            f"SaveConfig(save_interval={t.save_interval}, save_steps={list(t.save_steps)}, "
            f"start_step={t.start_step}, end_step={t.end_step})"
        )
