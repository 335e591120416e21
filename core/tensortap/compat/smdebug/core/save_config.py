"""`smdebug.core.save_config`."""
from ..save_config import SaveConfig, SaveConfigMode  # noqa: F401
