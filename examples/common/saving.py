"""Collections the demos use to say exactly when tensortap saves something."""
from __future__ import annotations

from typing import Optional, Sequence

import tensortap as tt

NEVER = tt.SaveConfigMode(start_step=2 ** 62)


def every_step(name: str, regex: Sequence[str] = (), categories: Optional[Sequence[str]] = None) -> tt.Collection:
    """A collection saved on every step of every mode: for values the script saves itself now and
    then (hook.save_scalar / save_tensor), so none is dropped by the hook's save interval."""
    return tt.Collection(name, include_regex=tuple(regex), categories=tuple(categories) if categories else None,
                         save_config=tt.SaveConfig(save_interval=1))


def eval_steps_only(name: str, regex: Sequence[str] = (), categories: Optional[Sequence[str]] = None) -> tt.Collection:
    """A collection saved on every EVAL step and never in TRAIN/PREDICT: the demos' probe passes
    (a fixed held-out batch run in eval mode) are its EVAL steps, so every capture shows the same inputs."""
    return tt.Collection(name, include_regex=tuple(regex), categories=tuple(categories) if categories else None,
                         save_config=tt.SaveConfig({tt.modes.TRAIN: NEVER, tt.modes.PREDICT: NEVER,
                                                    tt.modes.EVAL: tt.SaveConfigMode(save_interval=1)}))
