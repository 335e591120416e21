"""Trainer integrations: callbacks that drive a tensortap Hook from a trainer's own loop.

    from tensortap_torch.integrations import TransformersCallback, LightningCallback

Each is imported on first use: `transformers` and `lightning` are optional
(`pip install "tensortap-torch[transformers]"` / `"tensortap-torch[lightning]"`).
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__all__ = ["TransformersCallback", "LightningCallback"]

_WHERE = {"TransformersCallback": (".transformers_callback", "transformers", "transformers"),
          "LightningCallback": (".lightning_callback", "lightning", "lightning")}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, library, extra = _WHERE[name]
    if importlib.util.find_spec(library) is None:
        raise ImportError(f"{name} needs the {library!r} package: pip install \"tensortap-torch[{extra}]\"")
    return getattr(importlib.import_module(module, __name__), name)
