"""`import tensortap.compat.smdebug.tensorflow as smd` (smdebug.tensorflow): KerasHook, get_hook, ...

smdebug's SessionHook / EstimatorHook (TF1 sessions and estimators) have no counterpart."""
from . import modes
from .collection import Collection, CollectionKeys
from .exceptions import NoCounterpart
from .hook import del_hook, get_hook as _get_hook, set_hook
from .keras import KerasHook
from .reduction_config import ReductionConfig
from .save_config import SaveConfig, SaveConfigMode
from .trials import create_trial

__all__ = ["KerasHook", "get_hook", "set_hook", "del_hook", "modes", "Collection", "CollectionKeys",
           "ReductionConfig", "SaveConfig", "SaveConfigMode", "create_trial"]


def get_hook(hook_type: str = "keras", json_config_path=None, create_if_not_exists: bool = False):
    """smdebug.tensorflow.get_hook: the KerasHook (hook_type "session" / "estimator": no counterpart)."""
    if hook_type not in (None, "keras"):
        raise NoCounterpart(f"get_hook(hook_type={hook_type!r}): TF1 sessions and estimators have no counterpart in "
                            "tensortap; use the KerasHook, or tt.Hook(...).wrap_tape for custom loops")
    return _get_hook(json_config_path, create_if_not_exists, hook_class=KerasHook)


def __getattr__(name: str):
    if name in ("SessionHook", "EstimatorHook"):
        raise NoCounterpart(f"smdebug.tensorflow.{name} (TF1 sessions and estimators) has no counterpart in tensortap; "
                            "use KerasHook, or tt.Hook(...).wrap_tape for custom loops")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
