"""tensortap: a framework-agnostic training debugger. The public API, flat."""
from . import modes
from ._version import __version__
from .adapter import Adapter, AdapterSpec, Handle
from .capture import Capture
from .collections import Collection
from .errors import (AttentionNotFound, ConfigError, CorruptRunError, NotARunError, PluginError, StepNotFound,
                     StopTraining, TensorNotFound, TensorTapError, WriterGoneError)
from .framework_versions import FrameworkVersionWarning, SupportedVersions
from .hook import Hook
from .hookspecs import hookimpl
from .reductions import ReductionConfig
from .rules import invoke_rule
from .save_config import SaveConfig, SaveConfigMode
from .trial import Tensor, Trial, WorkerStatus, WriterStatus, create_trial
from .vector_reductions import VectorReduction
from . import rules, vis, explain, parallel  # noqa: E402,F401  (tt.rules.get, tt.vis.get, tt.explain.gradcam)

__all__ = [
    "__version__", "Hook", "SaveConfig", "SaveConfigMode", "ReductionConfig", "Collection", "modes",
    "create_trial", "Trial", "Tensor", "invoke_rule", "rules", "vis", "explain", "parallel", "hookimpl",
    "Adapter", "AdapterSpec", "Handle", "Capture", "TensorTapError", "ConfigError", "NotARunError", "CorruptRunError",
    "TensorNotFound", "StepNotFound", "PluginError", "StopTraining", "VectorReduction", "AttentionNotFound",
    "SupportedVersions", "FrameworkVersionWarning", "WriterGoneError", "WriterStatus", "WorkerStatus",
]
