"""smdebug's JSON hook configuration (debughookconfig.json), with the meanings smdebug 1.0.34's
`Hook.create_from_json_file` gives it:

    {"LocalPath": "/tmp/run",
     "HookParameters": {"save_interval": "10", "reductions": "mean,abs_max", "include_regex": "relu.*"},
     "CollectionConfigurations": [
        {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "15"}}]}

- LocalPath is the run directory (S3Path is used when there is no LocalPath: tensortap writes to
  s3:// through fsspec itself);
- HookParameters (string values): save_interval / save_steps ("1,2,3") / start_step / end_step,
  each also per mode with a "train." / "eval." / "predict." / "global." prefix; reductions
  (comma-separated, "abs_" and "_norm" forms) with save_raw_tensor; save_all; include_regex
  (comma-separated, collection "default"); include_workers ("one", the default: rank 0 only, or
  "all"); export_tensorboard / tensorboard_dir;
- each collection in CollectionConfigurations is included, with its own save parameters (over
  the hook's, mode by mode), reductions and include_regex; "losses" (and "metrics") are always
  included, as smdebug's framework hooks do; losses and metrics are saved in full even when
  reductions are asked for;
- steps are saved with smdebug's rule (save_config.py), save_interval defaulting to 500.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ...collections import Collection
from ...errors import ConfigError
from ...modes import ALL_MODES, ModeKeys
from ...reductions import ReductionConfig as _TTReductionConfig
from .reduction_config import ReductionConfig, _bool
from .save_config import SaveConfig, SaveConfigMode

TOP_KEYS = ("LocalPath", "S3Path", "HookParameters", "CollectionConfigurations")
SAVE_KEYS = ("save_interval", "save_steps", "start_step", "end_step")
PREFIXES = {ModeKeys.TRAIN: "train.", ModeKeys.EVAL: "eval.", ModeKeys.PREDICT: "predict.", ModeKeys.GLOBAL: "global."}
HOOK_KEYS = SAVE_KEYS + ("reductions", "save_raw_tensor", "save_shape", "save_all", "include_regex",
                         "include_workers", "export_tensorboard", "tensorboard_dir")
COLLECTION_KEYS = SAVE_KEYS + ("reductions", "save_raw_tensor", "save_shape", "include_regex", "save_histogram")
#: what smdebug's PyTorch/MXNet (losses) and Keras (metrics, losses) hooks always include
DEFAULT_INCLUDED = ("losses", "metrics")
#: collections smdebug always saves in full, whatever the reductions
FULL_ONLY = ("losses", "metrics")


def split(value: Any) -> List[str]:
    """smdebug's comma-separated lists ("a, b" -> ["a", "b"]); a JSON list is taken as is."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return [x.strip() for x in str(value).split(",") if x.strip()]


def _known(key: str, allowed: Tuple[str, ...]) -> bool:
    for prefix in PREFIXES.values():
        if key.startswith(prefix) and key[len(prefix):] in SAVE_KEYS:
            return True
    return key in allowed


def mode_dicts(params: Dict[str, Any], base: Optional[Dict[ModeKeys, Dict[str, Any]]] = None
               ) -> Dict[ModeKeys, Dict[str, Any]]:
    """Per mode: the unprefixed save keys, overridden by that mode's prefixed ones, over `base`."""
    plain = {k: params[k] for k in SAVE_KEYS if k in params}
    out = {}
    for m in ALL_MODES:
        own = {k[len(PREFIXES[m]):]: v for k, v in params.items()
               if k.startswith(PREFIXES[m]) and k[len(PREFIXES[m]):] in SAVE_KEYS}
        out[m] = {**(base or {}).get(m, {}), **plain, **own}
    return out


def save_config(modes: Dict[ModeKeys, Dict[str, Any]]) -> SaveConfig:
    return SaveConfig({m: SaveConfigMode.from_dict(d) for m, d in modes.items()})


def _check(src, where: tuple, table: Any, allowed: Tuple[str, ...], what: str) -> Dict[str, Any]:
    from ...errors import did_you_mean

    if table is None:
        return {}
    if not isinstance(table, dict):
        raise src.error(where, f"{what} must be an object, got {type(table).__name__}")
    for k in table:
        if not _known(str(k), allowed):
            raise src.error(where + (k,), f"unknown key {k!r} in {what}." + did_you_mean(str(k), allowed)
                            + f" Known keys: {', '.join(allowed)} (save keys also with a train./eval./predict./global. "
                            "prefix)")
    return table


def _guard(src, where: tuple, fn):
    try:
        return fn()
    except ConfigError as e:
        raise src.error(where, str(e)) from None
    except (TypeError, ValueError) as e:
        raise src.error(where, f"bad value: {e}") from None


def run_config(data: Dict[str, Any], src):
    """The RunConfig (tensortap.zerocode.run_config) an smdebug JSON hook configuration means."""
    from ...zerocode.run_config import RunConfig

    _check(src, (), data, TOP_KEYS, "the smdebug hook configuration")
    hp = _check(src, ("HookParameters",), data.get("HookParameters"), HOOK_KEYS, "HookParameters")
    cfg = RunConfig(path=src.path, fmt="smdebug-json")
    cfg.out_dir = data.get("LocalPath") or data.get("S3Path")
    base = mode_dicts(hp)
    cfg.save_config = _guard(src, ("HookParameters",), lambda: save_config(base))
    if "reductions" in hp:
        cfg.reduction_config = _guard(src, ("HookParameters", "reductions"),
                                      lambda: ReductionConfig.from_dict(hp).to_tensortap())
    if "save_all" in hp:
        cfg.save_all = _guard(src, ("HookParameters", "save_all"), lambda: _bool("save_all", hp["save_all"]))
    if "include_regex" in hp:
        cfg.include_regex = split(hp["include_regex"])
    cfg.include_workers = str(hp.get("include_workers", "one"))
    if cfg.include_workers not in ("one", "all"):
        raise src.error(("HookParameters", "include_workers"),
                        f'include_workers must be "one" or "all", got {cfg.include_workers!r}')
    export = _guard(src, ("HookParameters", "export_tensorboard"),
                    lambda: _bool("export_tensorboard", hp.get("export_tensorboard", False)))
    cfg.tensorboard_dir = hp.get("tensorboard_dir")
    cfg.export_tensorboard = export or cfg.tensorboard_dir is not None
    if "save_shape" in hp:
        cfg.notes.append("save_shape: tensortap always records shapes")
    colls: List[Collection] = []
    confs = data.get("CollectionConfigurations") or []
    if not isinstance(confs, list):
        raise src.error(("CollectionConfigurations",), "CollectionConfigurations must be a list")
    for i, c in enumerate(confs):
        where = ("CollectionConfigurations", i)
        _check(src, where, c, ("CollectionName", "CollectionParameters"), "a collection configuration")
        if "CollectionName" not in c:
            raise src.error(where, "each collection configuration needs a CollectionName")
        cp = _check(src, where + ("CollectionParameters",), c.get("CollectionParameters"), COLLECTION_KEYS,
                    f"CollectionParameters of {c['CollectionName']!r}")
        colls.append(_guard(src, where + ("CollectionName",), lambda c=c, cp=cp: collection(
            str(c["CollectionName"]), cp, base)))
        if "save_histogram" in cp:
            cfg.notes.append("save_histogram: `tensortap export-tensorboard` decides what becomes a histogram")
    names = {c.name for c in colls}
    extra = [full_only(n) if cfg.reduction_config is not None else n for n in DEFAULT_INCLUDED if n not in names]
    if cfg.reduction_config is not None:
        colls = [_full_if_needed(c) for c in colls]
    cfg.include_collections = colls + extra
    return cfg


def collection(name: str, params: Dict[str, Any], base: Dict[ModeKeys, Dict[str, Any]]) -> Collection:
    """A configured collection: the built-in one of that name (or one of the user's own), with
    its save config (its keys over the hook's, per mode), reductions and regexes."""
    from ...hook import user_collection
    from ...plugins import get_registry

    known = get_registry().collections
    if name in known:
        k = known[name]
        c = Collection(k.name, k.include_regex, k.tensor_names, None, None, k.categories, k.description)
    else:
        c = user_collection(name, known)
    c.save_config = save_config(mode_dicts(params, base))
    if "reductions" in params:
        c.reduction_config = ReductionConfig.from_dict(params).to_tensortap()
    if "include_regex" in params:
        c.include(split(params["include_regex"]))
    return c


def full_only(name: str) -> Collection:
    from ...plugins import get_registry

    k = get_registry().collections[name]
    return Collection(k.name, k.include_regex, k.tensor_names, None,
                      _TTReductionConfig(reductions=(), save_raw_tensor=True), k.categories, k.description)


def _full_if_needed(c: Collection) -> Collection:
    if c.name in FULL_ONLY and c.reduction_config is None:
        c.reduction_config = _TTReductionConfig(reductions=(), save_raw_tensor=True)
    return c
