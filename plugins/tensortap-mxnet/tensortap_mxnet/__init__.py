"""tensortap plugin for MXNet/Gluon. Importing this package does not import mxnet.

`tt.Hook(...).register(gluon_block)` finds the adapter through the plugin registry; the helpers
here are the few extras a Gluon user calls by hand.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

__version__ = "0.1.0"
__all__ = ["set_tokens", "record_gradcam"]


def _adapter(hook: Any):
    from .adapter import MXNetAdapter

    if not isinstance(getattr(hook, "adapter", None), MXNetAdapter):
        from tensortap.errors import ConfigError

        raise ConfigError("this hook has no mxnet adapter yet: call hook.register(gluon_model) first")
    return hook.adapter


def set_tokens(hook: Any, tokens: Sequence) -> None:
    """Token strings of the batch about to run (one list per sequence); saved as attention/tokens
    beside the attention of every saved step until replaced (None clears them)."""
    _adapter(hook).set_tokens(tokens)


def record_gradcam(hook: Any, model: Any, inputs: Any, target_layer: Any,
                   targets: Optional[Sequence[int]] = None, images: Any = None) -> bool:
    """Grad-CAM of `target_layer` for `inputs`, stored in collection "feature_maps" on saved steps
    that want it (tensortap.explain.record_gradcam names); True if something was stored."""
    from .gradcam import record

    return record(hook, model, inputs, target_layer, targets, images)
