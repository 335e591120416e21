"""What a `tensortap run` configuration means once loaded and checked (RunConfig, its [[rules]]
entries), and how it makes a hook. Both readers build it: tensortap.zerocode.config (TOML, JSON,
YAML) and tensortap.compat.smdebug.json_config (smdebug's JSON hook configuration)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..collections import Collection
from ..errors import ConfigError
from ..reductions import ReductionConfig
from ..save_config import SaveConfig


@dataclass
class RuleSpec:
    """One [[rules]] entry; made into fresh Rule and Action objects for each hook."""

    name: str
    params: Dict[str, Any]
    actions: List[Any]
    make: Optional[Callable[[], Any]] = None  # a factory for rules given as objects (smdebug-style rules)


@dataclass
class RunConfig:
    """A loaded, checked configuration: what `tensortap run` attaches to the training script."""

    path: str
    fmt: str
    out_dir: Optional[str] = None
    include_collections: Optional[List[Any]] = None
    include_regex: Optional[List[str]] = None
    save_all: bool = False
    framework: Optional[str] = None
    save_config: Optional[SaveConfig] = None
    reduction_config: Optional[ReductionConfig] = None
    rules: List[RuleSpec] = field(default_factory=list)
    include_workers: str = "all"
    tensorboard_dir: Optional[str] = None
    export_tensorboard: bool = False  # at close, into tensorboard_dir (default <out_dir>/tensorboard, as smdebug)
    writer: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # what was accepted but means nothing here (smdebug keys)

    def tensorboard_out(self, out_dir: str) -> Optional[str]:
        """Where the run is exported for TensorBoard when it closes (None: not exported)."""
        if not self.export_tensorboard:
            return None
        if self.tensorboard_dir:
            return os.path.expanduser(self.tensorboard_dir)
        return os.path.join(out_dir, "tensorboard")

    def make_rules(self) -> List[Tuple[Any, Any]]:
        """Fresh (rule, actions) pairs, as hook.add_rule takes them."""
        from ..rules import make_rule
        from ..rules.actions import make_actions

        out = []
        for r in self.rules:
            rule = r.make() if r.make is not None else make_rule(r.name, dict(r.params))
            out.append((rule, [a for spec in r.actions for a in make_actions(_action(spec))]))
        return out

    def make_hook(self, out_dir: str):
        """The Hook this configuration describes, with its rules attached."""
        from ..hook import Hook

        hook = Hook(out_dir, include_collections=_copy_collections(self.include_collections),
                    save_config=self.save_config, reduction_config=self.reduction_config,
                    framework=self.framework, include_regex=self.include_regex, save_all=self.save_all,
                    **self.writer)
        for rule, actions in self.make_rules():
            hook.add_rule(rule, action=actions or None)
        return hook


def _copy_collections(items: Optional[List[Any]]) -> Optional[List[Any]]:
    """Collections are filled and re-planned per hook: each hook gets its own copies."""
    if items is None:
        return None
    return [Collection(c.name, c.include_regex, c.tensor_names, c.save_config, c.reduction_config, c.categories,
                       c.description) if isinstance(c, Collection) else c for c in items]


def _action(spec: Any) -> Any:
    """An action entry: a name, or {name = "webhook", url = ...} made with its parameters."""
    if isinstance(spec, dict):
        from ..rules import get_action

        params = {k: v for k, v in spec.items() if k != "name"}
        cls = get_action(spec["name"])
        try:
            return cls(**params)
        except TypeError as e:
            raise ConfigError(f"action {spec['name']!r}: {e}") from None
    return spec
