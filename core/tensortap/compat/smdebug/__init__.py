"""Run smdebug scripts and custom rules by changing only the import line:

    import tensortap.compat.smdebug as smd              # or .pytorch / .tensorflow / .mxnet
    hook = smd.Hook(out_dir="runs/exp1", save_config=smd.SaveConfig(save_interval=10))
    from tensortap.compat.smdebug.trials import create_trial
    from tensortap.compat.smdebug.rules import Rule, invoke_rule
    from tensortap.compat.smdebug.exceptions import RuleEvaluationConditionMet

Hooks are tensortap Hooks with smdebug's arguments and defaults; trials are tensortap trials with
smdebug's methods; rules written against smdebug's Rule run offline, live (hook.add_rule) and with
`tensortap rules run RUN --rule-file my_rule.py`. What has no counterpart (the profiler,
SageMaker's services) raises NoCounterpart saying so. docs/migrating-from-smdebug.md lists every
name beside its tensortap counterpart.
"""
from . import modes
from .collection import Collection, CollectionKeys
from .exceptions import NoCounterpart
from .hook import Hook, del_hook, get_hook, set_hook
from .keras import KerasHook
from .reduction_config import ReductionConfig
from .save_config import SaveConfig, SaveConfigMode
from .trials import create_trial

__version__ = "1.0.34+tensortap"  # the smdebug API this layer follows

__all__ = ["Hook", "KerasHook", "get_hook", "set_hook", "del_hook", "modes", "Collection", "CollectionKeys",
           "ReductionConfig", "SaveConfig", "SaveConfigMode", "create_trial", "NoCounterpart"]


def __getattr__(name: str):
    if name in ("profiler", "xgboost"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # raises NoCounterpart, saying why
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
