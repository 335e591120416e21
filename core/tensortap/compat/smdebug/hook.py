"""smdebug's Hook (the PyTorch / MXNet hook, and the base of KerasHook) as a tensortap Hook.

What it keeps from smdebug: the constructor's arguments and defaults (save_interval 500, full
tensors unless a ReductionConfig asks for reductions, "losses" always included, include_workers
"one": only rank 0 writes), register_module / register_block / register_hook / register_loss,
set_mode, save_scalar, save_tensor(tensor_name, tensor_value, collections_to_write=),
get_collection(name) (made if missing, saved only when included), create_from_json_file,
get_hook. What differs: tensor names are tensortap's, the framework is found from the model, and
save_tensor stores the value at the step it was called in, in its collection (smdebug 1.0.34
stored it one step late and without its collection).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Type, Union

from ...collections import Collection as _TTCollection
from ...errors import ConfigError
from ...hook import Hook as _TTHook, _env_rank, user_collection
from ...plugins import get_registry
from ...reductions import ReductionConfig as _TTReductionConfig
from .collection import Collection
from .reduction_config import to_tensortap
from .save_config import SaveConfig

log = logging.getLogger("tensortap")

CONFIG_FILE_PATH_ENV_STR = "SMDEBUG_CONFIG_FILE_PATH"
DEFAULT_CONFIG_FILE_PATH = "/opt/ml/input/config/debughookconfig.json"
#: collections smdebug saves in full whatever the reductions
FULL_ONLY = ("losses", "metrics")


def _flatten(items: Any) -> List[Any]:
    if isinstance(items, (str, _TTHook)) or not isinstance(items, (list, tuple, set)):
        return [items]
    out: List[Any] = []
    for it in items:
        out += _flatten(it)
    return out


class Hook(_TTHook):
    """`Hook(out_dir, export_tensorboard=False, tensorboard_dir=None, dry_run=False,
    reduction_config=None, save_config=None, include_regex=None, include_collections=None,
    save_all=False, include_workers="one")`, as smdebug's."""

    #: collections this hook always includes (smdebug's framework defaults)
    default_include_collections: Sequence[str] = ("losses",)

    def __init__(self, out_dir: Optional[str] = None, export_tensorboard: bool = False,
                 tensorboard_dir: Optional[str] = None, dry_run: bool = False, reduction_config: Any = None,
                 save_config: Any = None, include_regex: Union[str, Sequence[str], None] = None,
                 include_collections: Optional[Sequence[Any]] = None, save_all: bool = False,
                 include_workers: str = "one") -> None:
        if out_dir is None:
            raise ConfigError("out_dir is required: smdebug's SageMaker default (/opt/ml/output/tensors) has no "
                              "counterpart; pass out_dir=\"runs/name\" (a path or an fsspec URL such as s3://...)")
        if include_workers not in ("one", "all"):
            raise ConfigError(f'include_workers must be "one" or "all", got {include_workers!r}')
        rc = to_tensortap(reduction_config)
        self.include_workers = include_workers
        rank = _env_rank()
        #: saves nothing: dry_run, or a rank other than 0 under include_workers="one" (a tt.Hook dry_run)
        self.inert = bool(dry_run) or (include_workers == "one" and rank not in (None, 0))
        if dry_run:
            log.warning("tensortap: dry_run=True: this hook saves nothing")
        self._defined: Dict[str, Collection] = {}
        self._sm_metric_warned = False
        self._losses_registered = 0
        super().__init__(out_dir, include_collections=self._collections(include_collections, rc),
                         save_config=SaveConfig.parse(save_config), reduction_config=rc,
                         include_regex=include_regex, save_all=save_all, dry_run=self.inert)
        for c in self.collections:
            if isinstance(c, Collection):
                c.bind(self)
        self.export_tensorboard = bool(export_tensorboard)
        self.tensorboard_dir = (os.path.expanduser(tensorboard_dir) if tensorboard_dir else
                                (os.path.join(self.out_dir, "tensorboard") if export_tensorboard else None))
        set_hook(self)

    def _collections(self, include: Optional[Sequence[Any]], rc: Optional[_TTReductionConfig]) -> List[Collection]:
        known = get_registry().collections
        given = _flatten(include) if include is not None else []
        out: Dict[str, Collection] = {}
        for c in given + [n for n in self.default_include_collections]:
            name = c if isinstance(c, str) else c.name
            if name in out:
                continue
            if isinstance(c, Collection):
                coll = c
            elif not isinstance(c, str):
                coll = Collection.like(c)
            elif name in known:
                coll = Collection.like(known[name])
            else:
                coll = Collection.like(user_collection(name, known))
            if rc is not None and name in FULL_ONLY and coll.reduction_config is None:
                coll.reduction_config = _TTReductionConfig(reductions=(), save_raw_tensor=True)
            out[name] = coll
        return list(out.values())

    # ---- registration ---------------------------------------------------------------------
    def register(self, model: Any) -> "Hook":
        super().register(model)
        self.resolve_layers()
        return self

    def register_module(self, module: Any) -> None:
        self.register(module)

    register_block = register_hook = register_model = register_module

    def register_loss(self, loss_obj: Any, name: Optional[str] = None) -> None:
        """smdebug named each loss module's output by its class; here the first is "loss", later
        ones "loss_1", "loss_2", ... (as `tensortap run` names them), so two losses never share a name."""
        self._losses_registered += 1
        k = self._losses_registered - 1
        super().register_loss(loss_obj, name or ("loss" if k == 0 else f"loss_{k}"))

    def resolve_layers(self) -> None:
        """Layers named by add_module_tensors / add_block_tensors, as regexes of their names."""
        adapter = self.adapter
        if adapter is None or adapter.model is None:
            return
        names = {id(layer): name for name, layer in adapter.named_layers(adapter.model) if layer is not None}
        for c in list(self.collections) + list(self._defined.values()):
            if isinstance(c, Collection) and c.modules:
                c.resolve(names)

    # ---- collections ------------------------------------------------------------------------
    def get_collection(self, name: str, create: bool = True) -> _TTCollection:
        """The collection `name`; one that is not included is made (and saved only if included)."""
        for c in self.collections:
            if c.name == name:
                return c
        if name not in self._defined:
            if not create:
                raise ConfigError(f"Collection {name} has not been created")
            known = get_registry().collections
            c = Collection.like(known[name]) if name in known else Collection(name)
            c.bind(self)
            self._defined[name] = c
        return self._defined[name]

    def get_collections(self) -> Dict[str, _TTCollection]:
        return {**self._defined, **{c.name: c for c in self.collections}}

    def add_collection(self, collection: Any) -> None:
        c = collection if isinstance(collection, Collection) else Collection.like(collection)
        c.bind(self)
        for i, have in enumerate(self.collections):
            if have.name == c.name:
                c.on_change(self._collection_changed)
                self.collections[i] = c
                self._collection_changed()
                return
        self._defined[c.name] = c

    # ---- saving -----------------------------------------------------------------------------
    def save_scalar(  # type: ignore[override]  # smdebug's signature: scripts pass sm_metric positionally
            self, name: str, value: Any, sm_metric: bool = False, timestamp: Optional[float] = None) -> None:
        if sm_metric and not self._sm_metric_warned:
            self._sm_metric_warned = True
            log.warning("tensortap: save_scalar(..., sm_metric=True): SageMaker metrics have no counterpart; the "
                        "scalar is saved in the run (collection 'scalars')")
        super().save_scalar(name, value)

    def save_tensor(self, tensor_name: str, tensor_value: Any, collections_to_write: Any = "default") -> None:
        super().save_tensor(tensor_name, tensor_value, collections=collections_to_write)

    def record_tensor_value(self, tensor_name: str, tensor_value: Any) -> None:
        """smdebug's way to save a loss computed by a function (F.cross_entropy(...))."""
        self.record_loss(tensor_value, tensor_name)

    def add_rule(self, rule: Any, action: Any = None, **params: Any) -> None:
        """A tensortap rule, or an smdebug-style rule (a class, made with the live trial and
        `params`, or an instance made with base_trial=None), evaluated live."""
        from .rules.rule import Rule as SmdebugRuleBase
        from .rules.tensortap_rule import SmdebugRule

        if (isinstance(rule, type) and issubclass(rule, SmdebugRuleBase)) or isinstance(rule, SmdebugRuleBase):
            rule = SmdebugRule(rule, **params)
        elif params:
            raise ConfigError("parameters go with an smdebug rule class; make a tensortap rule with its parameters")
        super().add_rule(rule, action=action)

    # ---- closing --------------------------------------------------------------------------
    def close(self, timeout: Optional[float] = None) -> None:
        closed = self._closed
        super().close(timeout)
        if self.tensorboard_dir and not closed and self.adapter is not None:
            from ...export.tensorboard import export_tensorboard

            try:
                export_tensorboard(self.out_dir, self.tensorboard_dir)
            except Exception as e:  # noqa: BLE001 - the run is written; the export is a copy
                log.warning("tensortap: could not export the run to %s for TensorBoard: %s", self.tensorboard_dir, e)

    @classmethod
    def create_from_json_file(cls, json_file_path: Optional[str] = None) -> "Hook":
        """A hook from smdebug's JSON hook configuration: the given path, else $SMDEBUG_CONFIG_FILE_PATH,
        else /opt/ml/input/config/debughookconfig.json (FileNotFoundError when there is none)."""
        from ...zerocode.config import load

        path = json_file_path or os.environ.get(CONFIG_FILE_PATH_ENV_STR, DEFAULT_CONFIG_FILE_PATH)
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        cfg = load(path)
        if cfg.out_dir is None:
            raise ConfigError(f"{path}: no LocalPath (or S3Path): where should the run be written?")
        hook = cls(out_dir=cfg.out_dir, export_tensorboard=cfg.export_tensorboard, tensorboard_dir=cfg.tensorboard_dir,
                   reduction_config=cfg.reduction_config, save_config=cfg.save_config,
                   include_regex=cfg.include_regex, include_collections=cfg.include_collections,
                   save_all=cfg.save_all, include_workers=cfg.include_workers)
        return hook

    def has_default_hook_configuration(self) -> bool:
        return {c.name for c in self.collections} <= set(self.default_include_collections)


# ---- the singleton (smdebug's get_hook / set_hook / del_hook) ------------------------------------
_hook: Optional[Hook] = None


def set_hook(custom_hook: Hook) -> None:
    global _hook
    _hook = custom_hook


def del_hook() -> None:
    global _hook
    _hook = None


def get_hook(json_config_path: Optional[str] = None, create_if_not_exists: bool = False,
             hook_class: Type[Hook] = Hook) -> Optional[Hook]:
    """The hook made last in this process; with create_if_not_exists, one from the JSON hook
    configuration if there is one (None otherwise), as smdebug's get_hook."""
    global _hook
    if _hook is not None and not isinstance(_hook, hook_class):
        _hook = None
    if _hook is None and create_if_not_exists:
        try:
            _hook = hook_class.create_from_json_file(json_config_path)
        except FileNotFoundError:
            return None
    return _hook
