"""`smdebug.core.modes`."""
from ..modes import ALLOWED_MODE_NAMES, ALLOWED_MODES, ModeKeys  # noqa: F401
