"""`smdebug.core.reduction_config`."""
from ..reduction_config import ReductionConfig  # noqa: F401
