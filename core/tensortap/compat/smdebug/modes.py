"""smdebug's modes (`smd.modes.TRAIN` ...): tensortap's ModeKeys."""
from ...modes import ALL_MODES, EVAL, GLOBAL, PREDICT, TRAIN, ModeKeys

ALLOWED_MODES = list(ALL_MODES)
ALLOWED_MODE_NAMES = [m.name for m in ALL_MODES]
__all__ = ["ModeKeys", "TRAIN", "EVAL", "PREDICT", "GLOBAL", "ALLOWED_MODES", "ALLOWED_MODE_NAMES"]
