"""`import tensortap.compat.smdebug.pytorch as smd` (smdebug.pytorch): Hook, get_hook, modes, ..."""
from . import modes
from .collection import Collection, CollectionKeys
from .hook import Hook, del_hook, get_hook, set_hook
from .reduction_config import ReductionConfig
from .save_config import SaveConfig, SaveConfigMode
from .trials import create_trial

__all__ = ["Hook", "get_hook", "set_hook", "del_hook", "modes", "Collection", "CollectionKeys", "ReductionConfig",
           "SaveConfig", "SaveConfigMode", "create_trial"]
