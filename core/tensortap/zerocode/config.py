"""The configuration file of `tensortap run`: TOML, JSON or YAML mirroring tt.Hook's arguments, or
smdebug's JSON hook configuration (LocalPath / HookParameters / CollectionConfigurations).

Everything is checked when the file is loaded, before the training script starts: an unknown key
gets a did-you-mean error naming the file and line, and every value is built once (collections,
save and reduction configs, rules, actions) so a bad one fails here, not at the first saved step.

    out_dir = "runs/exp1"
    include_collections = ["weights", "gradients", "losses"]
    [save_config]
    save_interval = 10
    [reduction_config]
    reductions = ["mean", "std"]
    [[rules]]
    name = "loss_not_decreasing"
    params = { num_steps = 20 }
    actions = ["log", "stop_training"]
"""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..collections import Collection
from ..errors import ConfigError, did_you_mean
from ..modes import ALL_MODES
from ..reductions import ReductionConfig
from ..save_config import SaveConfig, SaveConfigMode
from .run_config import RuleSpec, RunConfig, _action

#: top-level keys and what they mean (the did-you-mean list, and `tensortap run --help`)
TOP_KEYS = {
    "out_dir": "where the run is written (a path or an fsspec URL); `tensortap run --out` overrides it",
    "include_collections": "collection names to save (a name that is not built in makes a collection of your own)",
    "include_regex": "tensor-name regexes saved in collection 'default'",
    "save_all": "save every tensor the adapter sees (collection 'all')",
    "framework": "torch / tensorflow / mxnet: only instrument this framework",
    "save_config": "when to save: save_interval, save_steps, start_step, end_step, and [save_config.train] ...",
    "reduction_config": "reductions, histogram_bins, save_raw_tensor: summaries instead of full tensors",
    "collections": "[[collections]] tables: name, include_regex, tensor_names, save_config, reduction_config",
    "rules": "[[rules]] tables: name, params, actions",
    "include_workers": '"all" (default): every rank writes its worker; "one": only rank 0',
    "tensorboard_dir": "also export the run as TensorBoard event files here when it closes",
    "queue_bytes": "the writer's queue size in bytes",
    "on_full": '"block" (default) or "drop": what the writer does when the disk falls behind',
    "flush_seconds": "make written steps readable at least this often",
}
SAVE_KEYS = ("save_interval", "save_steps", "start_step", "end_step")
MODE_KEYS = tuple(m.value for m in ALL_MODES)
REDUCTION_KEYS = ("reductions", "histogram_bins", "save_raw_tensor")
COLLECTION_KEYS = ("name", "include_regex", "tensor_names", "save_config", "reduction_config")
RULE_KEYS = ("name", "params", "actions")
ACTION_KEYS = ("name",)  # plus the action's own parameters




# ---- locating keys in the text (for file:line in every error) ---------------------------------------
class Source:
    """The file's text, to point errors at the line a key is on."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        self.lines = text.splitlines()

    def line_of(self, keys: Sequence[Any]) -> Optional[int]:
        """The 1-based line of the last key of `keys` (a path of names/indices), searched after
        the line of its parent; None when not found (e.g. a key built from a string)."""
        line = 0
        for k in keys:
            if not isinstance(k, str):
                continue
            found = self._find(k, line)
            if found is None:
                found = self._find(k, 0)
            if found is None:
                return line or None
            line = found
        return line or None

    def _find(self, key: str, after: int) -> Optional[int]:
        k = re.escape(key)
        pat = re.compile(rf'(^|[\s{{,\[.])"?{k}"?\s*[=:]|^\s*\[+\s*(?:[\w.]+\.)?{k}\s*\]+')
        for i in range(after, len(self.lines)):
            if pat.search(self.lines[i]):
                return i + 1
        return None

    def error(self, keys: Sequence[Any], message: str) -> ConfigError:
        line = self.line_of(keys)
        where = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{where}: {message}")


def _check_keys(src: Source, where: Tuple[Any, ...], table: Any, known: Sequence[str], what: str) -> None:
    if not isinstance(table, dict):
        raise src.error(where, f"{what} must be a table (a mapping), got {type(table).__name__}")
    for k in table:
        if k not in known:
            raise src.error(where + (k,), f"unknown key {k!r} in {what}." + did_you_mean(str(k), known)
                            + f" Known keys: {', '.join(known)}")


def _guard(src: Source, where: Tuple[Any, ...], fn: Callable[..., Any]) -> Any:
    """Run fn; a ConfigError/TypeError/ValueError it raises is re-raised pointing at `where`."""
    try:
        return fn()
    except ConfigError as e:
        raise src.error(where, str(e)) from None
    except (TypeError, ValueError) as e:
        raise src.error(where, f"bad value: {e}") from None


# ---- parsing --------------------------------------------------------------------------------------------
def _parse(path: str, text: str) -> Tuple[str, Any]:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        return "yaml", _parse_yaml(path, text)
    if ext == ".toml":
        return "toml", _parse_toml(path, text)
    if ext == ".json" or text.lstrip().startswith("{"):
        try:
            return "json", json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
    return "toml", _parse_toml(path, text)


def _parse_toml(path: str, text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9/3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(f"{path}: reading TOML needs Python 3.11+ or the tomli package "
                              "(pip install tomli); or write the configuration as JSON") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        line = m.group(1) if m else (len(text.splitlines()) if "end of document" in str(e) else None)
        where = f"{path}:{line}" if line else path
        raise ConfigError(f"{where}: not valid TOML: {e}") from None


def _parse_yaml(path: str, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the configuration "
                          "as TOML or JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(f"{where}: not valid YAML: {e}") from None


def looks_like_smdebug(data: Any) -> bool:
    """smdebug's hook configuration (what SageMaker wrote to debughookconfig.json)."""
    keys = {"LocalPath", "S3Path", "HookParameters", "CollectionConfigurations"}
    return isinstance(data, dict) and bool(keys & set(data)) and not (set(data) & set(TOP_KEYS))


def load(path: str) -> RunConfig:
    """Read and check a configuration file; every error names the file (and line)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the configuration {path!r}: {e.strerror or e}") from None
    fmt, data = _parse(path, text)
    src = Source(path, text)
    if data is None:
        data = {}
    if looks_like_smdebug(data):
        from ..compat.smdebug.json_config import run_config

        return run_config(data, src)
    cfg = RunConfig(path=path, fmt=fmt)
    _check_keys(src, (), data, list(TOP_KEYS), "the configuration")
    _read_top(src, data, cfg)
    return cfg


def _str_list(src: Source, where: Tuple[Any, ...], v: Any) -> List[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise src.error(where, f"{where[-1]} must be a list of strings, got {v!r}")
    return list(v)


def _read_top(src: Source, data: Dict[str, Any], cfg: RunConfig) -> None:
    if "out_dir" in data:
        if not isinstance(data["out_dir"], str) or not data["out_dir"].strip():
            raise src.error(("out_dir",), f"out_dir must be a non-empty string, got {data['out_dir']!r}")
        cfg.out_dir = data["out_dir"]
    if "include_collections" in data:
        cfg.include_collections = _str_list(src, ("include_collections",), data["include_collections"])
    if "include_regex" in data:
        cfg.include_regex = _str_list(src, ("include_regex",), data["include_regex"])
    for key in ("save_all",):
        if key in data:
            if not isinstance(data[key], bool):
                raise src.error((key,), f"{key} must be true or false, got {data[key]!r}")
            cfg.save_all = data[key]
    if "framework" in data:
        from ..plugins import get_registry

        cfg.framework = data["framework"]
        _guard(src, ("framework",), lambda: get_registry().get("adapters", str(cfg.framework)))
    if "save_config" in data:
        cfg.save_config = read_save_config(src, ("save_config",), data["save_config"])
    if "reduction_config" in data:
        cfg.reduction_config = read_reduction_config(src, ("reduction_config",), data["reduction_config"])
    if "collections" in data:
        colls = data["collections"]
        if not isinstance(colls, list):
            raise src.error(("collections",), "collections must be a list of tables ([[collections]] in TOML)")
        names = list(cfg.include_collections or [])
        extra = [read_collection(src, ("collections", i), c) for i, c in enumerate(colls)]
        cfg.include_collections = [n for n in names if n not in {c.name for c in extra}] + extra
    if "rules" in data:
        rules = data["rules"]
        if not isinstance(rules, list):
            raise src.error(("rules",), "rules must be a list of tables ([[rules]] in TOML)")
        cfg.rules = [read_rule(src, ("rules", i), r) for i, r in enumerate(rules)]
    if "include_workers" in data:
        if data["include_workers"] not in ("all", "one"):
            raise src.error(("include_workers",),
                            f'include_workers must be "all" or "one", got {data["include_workers"]!r}')
        cfg.include_workers = data["include_workers"]
    if "tensorboard_dir" in data:
        cfg.tensorboard_dir = str(data["tensorboard_dir"])
        cfg.export_tensorboard = True
    for key in ("queue_bytes", "on_full", "flush_seconds"):
        if key in data:
            cfg.writer[key] = data[key]
    _check_buildable(src, cfg)


def read_save_config(src: Source, where: Tuple[Any, ...], d: Any) -> SaveConfig:
    """{save_interval, save_steps, start_step, end_step, train = {...}, eval = {...}, ...}: a mode's
    table overrides the keys it sets."""
    _check_keys(src, where, d, SAVE_KEYS + MODE_KEYS, f"[{'.'.join(map(str, where))}]")
    base = {k: d[k] for k in SAVE_KEYS if k in d}
    per_mode = {}
    for m in MODE_KEYS:
        if m in d:
            _check_keys(src, where + (m,), d[m], SAVE_KEYS, f"[{'.'.join(map(str, where))}.{m}]")
            per_mode[m] = _guard(src, where + (m,), lambda m=m: SaveConfigMode(**_mode_args({**base, **d[m]})))
    return _guard(src, where, lambda: SaveConfig(per_mode or None, **_mode_args(base)))


def _mode_args(d: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(d)
    if "save_steps" in out:
        out["save_steps"] = tuple(out["save_steps"])
    return out


def read_reduction_config(src: Source, where: Tuple[Any, ...], d: Any) -> ReductionConfig:
    _check_keys(src, where, d, REDUCTION_KEYS, f"[{'.'.join(map(str, where))}]")
    args = dict(d)
    if isinstance(args.get("reductions"), list):
        args["reductions"] = tuple(args["reductions"])
    return _guard(src, where, lambda: ReductionConfig(**args))


def read_collection(src: Source, where: Tuple[Any, ...], d: Any) -> Collection:
    _check_keys(src, where, d, COLLECTION_KEYS, "a [[collections]] table")
    if "name" not in d:
        raise src.error(where, "each [[collections]] table needs a name")
    return _guard(src, where + ("name",), lambda: Collection(
        str(d["name"]), tuple(_str_list(src, where + ("include_regex",), d.get("include_regex", []))),
        frozenset(_str_list(src, where + ("tensor_names",), d.get("tensor_names", []))),
        read_save_config(src, where + ("save_config",), d["save_config"]) if "save_config" in d else None,
        read_reduction_config(src, where + ("reduction_config",), d["reduction_config"])
        if "reduction_config" in d else None))


def read_rule(src: Source, where: Tuple[Any, ...], d: Any) -> RuleSpec:
    _check_keys(src, where, d, RULE_KEYS, "a [[rules]] table")
    if "name" not in d:
        raise src.error(where, "each [[rules]] table needs a name (see `tensortap rules list`)")
    params = d.get("params", {})
    if not isinstance(params, dict):
        raise src.error(where + ("params",), f"params must be a table, got {params!r}")
    actions = d.get("actions", [])
    if isinstance(actions, (str, dict)):
        actions = [actions]
    if not isinstance(actions, list):
        raise src.error(where + ("actions",), f"actions must be a list of names or tables, got {actions!r}")
    for a in actions:
        if isinstance(a, dict) and "name" not in a:
            raise src.error(where + ("actions",), f"an action table needs a name, got {a!r}")
    return RuleSpec(str(d["name"]), dict(params), list(actions))


def _check_buildable(src: Source, cfg: RunConfig) -> None:
    """Build what a hook would be made of once (rules, actions, collections): bad names or values fail now."""
    from ..rules import get as get_rule
    from ..rules import make_rule
    from ..rules.actions import make_actions

    for i, r in enumerate(cfg.rules):
        where = ("rules", i, "name")
        if r.make is None:
            known = _guard(src, where, lambda r=r: get_rule(r.name)).params()
            for k in r.params:
                if k not in known:
                    raise src.error(("rules", i, "params", k), f"rule {r.name!r} has no parameter {k!r}."
                                    + did_you_mean(k, known) + f" Its parameters: {', '.join(known) or 'none'}")
            _guard(src, ("rules", i, "params"), lambda r=r: make_rule(r.name, dict(r.params)))
        for spec in r.actions:
            _guard(src, ("rules", i, "actions"), lambda spec=spec: make_actions(_action(spec)))
    for key, fn in (("on_full", lambda v: v in ("block", "drop")),):
        if key in cfg.writer and not fn(cfg.writer[key]):
            raise src.error((key,), f'on_full must be "block" or "drop", got {cfg.writer[key]!r}')
