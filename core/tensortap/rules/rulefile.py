"""A rule class from a Python file (`tensortap rules run RUN --rule-file my_rule.py --rule-class R`):
a tensortap Rule subclass, or a rule written for smdebug (tensortap.compat.smdebug.rules.Rule),
made with the given parameters."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Type, cast

from ..errors import ConfigError, did_you_mean
from .base import Rule


def _load_module(path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"--rule-file {path!r}: no such file")
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"tensortap_rule_file_{stem}_{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--rule-file {path!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file: say what it raised
        del sys.modules[name]
        raise ConfigError(f"--rule-file {path!r} raised {type(e).__name__}: {e}") from None
    return module


def rule_classes(module) -> dict[str, type]:
    """Concrete rule classes defined in `module` (tensortap rules and smdebug-style rules)."""
    from ..compat.smdebug.rules.rule import Rule as SmdebugRuleBase

    return {n: c for n, c in vars(module).items()
            if inspect.isclass(c) and c.__module__ == module.__name__ and issubclass(c, (Rule, SmdebugRuleBase))
            and not inspect.isabstract(c)}


def _smdebug_params(cls: type) -> list[str]:
    skip = {"self", "base_trial", "other_trials", "action_str"}
    return [p.name for p in inspect.signature(cls).parameters.values()
            if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def load_rule_file(path: str, class_name: str | None = None, params: dict[str, Any] | None = None) -> Rule:
    """The rule `class_name` of the file at `path` (the only one there when not given), made with `params`."""
    from ..compat.smdebug.rules.rule import Rule as SmdebugRuleBase
    from ..compat.smdebug.rules.tensortap_rule import SmdebugRule

    params = dict(params or {})
    classes = rule_classes(_load_module(path))
    if not classes:
        raise ConfigError(f"--rule-file {path!r} defines no rule class (a subclass of tensortap.rules.Rule or of "
                          "tensortap.compat.smdebug.rules.Rule)")
    if class_name is None:
        if len(classes) > 1:
            raise ConfigError(f"--rule-file {path!r} defines several rules ({', '.join(sorted(classes))}): "
                              "pick one with --rule-class NAME")
        class_name = next(iter(classes))
    if class_name not in classes:
        raise ConfigError(f"--rule-file {path!r} has no rule class {class_name!r}." + did_you_mean(class_name, classes)
                          + f" Its rules: {', '.join(sorted(classes))}")
    cls = classes[class_name]
    known = _smdebug_params(cls) if issubclass(cls, SmdebugRuleBase) else list(cast(Type[Rule], cls).params())
    for k in params:
        if k not in known:
            raise ConfigError(f"rule {class_name!r} has no parameter {k!r}." + did_you_mean(k, known)
                              + f" Its parameters: {', '.join(known) or 'none'}")
    try:
        return SmdebugRule(cls, **params) if issubclass(cls, SmdebugRuleBase) else cast(Type[Rule], cls)(**params)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"rule {class_name!r}: bad parameter value ({e})") from None
