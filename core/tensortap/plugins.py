"""The plugin manager: built-ins and entry-point plugins, loaded safely.

Built-in collections, rules, actions and visualizers are plugins registered exactly like a
third party's. Third-party plugins come from the entry-point group "tensortap", and from the
modules TENSORTAP_PLUGINS names (a plugin not installed as a distribution: tests, development;
the pytest plugin tensortap.testing.fixtures names the numpy test adapter there). A plugin that
fails to import, implements an unknown hook, returns something invalid, or registers a name
another plugin already owns is reported (`tensortap plugins`) and skipped; with
TENSORTAP_STRICT_PLUGINS=1 it is fatal. TENSORTAP_DISABLE_PLUGINS=a,b skips plugins by
entry-point, module or distribution name.

What plugins can register is a set of tables (Table), each filled by one registration hook.
The module that owns a kind of item adds its table when it is imported (tensortap.adapter:
adapters; tensortap.collections: collections; tensortap.rules: rules and actions; tensortap.vis:
visualizers; tensortap.vector_reductions: reductions), so the manager imports none of them.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata as md
import inspect
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import pluggy

from . import hookspecs
from ._version import __version__
from .errors import ConfigError, PluginError, did_you_mean
from .framework_versions import SupportedVersions

log = logging.getLogger("tensortap")

ENTRY_POINT_GROUP = "tensortap"
#: environment variable: modules to load as plugins besides the entry points (comma-separated)
PLUGINS_ENV = "TENSORTAP_PLUGINS"
KNOWN_HOOKS = {n for n in dir(hookspecs) if n.startswith("tensortap_")}


@dataclass(frozen=True)
class Table:
    """A kind of item plugins register: the table's name ("rules"), the registration hook whose
    results fill it, and what each item must be: a subclass of `base` with a `name` of its own
    (`classes`), or an instance of it; `shown_as` names `base` in errors ("tensortap.rules.Rule")."""

    name: str
    hook: str
    base: type
    shown_as: str
    classes: bool = False

    def check(self, item: Any) -> str:
        """The name `item` registers under, or PluginError saying what is wrong with it."""
        if not self.classes:
            if not isinstance(item, self.base):
                raise PluginError(f"{self.hook} must return {self.shown_as} objects, got {item!r}")
            return str(cast(Any, item).name)
        if not (inspect.isclass(item) and issubclass(item, self.base)):
            raise PluginError(f"{self.name} must be subclasses of {self.shown_as}, got {item!r}")
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name or name == getattr(self.base, "name", None):
            raise PluginError(f"{item.__module__}.{item.__qualname__} needs a class attribute `name` (a unique string)")
        return name


_lock = threading.RLock()
#: the tables plugins fill, by registration hook (add_table adds them)
_tables: dict[str, Table] = {}
#: the built-in plugin modules, loaded first, in this order (add_table adds those of other tables)
_builtins: list[str] = ["tensortap.collections"]


def add_table(table: Table, builtins: Sequence[str] = ()) -> None:
    """Let plugins fill `table`, and load `builtins` (modules) as built-in plugins. Called by the
    package that owns a kind of item when it is imported; a registry loaded before is reloaded at
    its next use."""
    global _registry
    with _lock:
        _tables[table.hook] = table
        _builtins.extend(m for m in builtins if m not in _builtins)
        _registry = None


def add_plugin_modules(*modules: str) -> None:
    """Load `modules` as plugins in this process and in the processes it starts (they are added
    to TENSORTAP_PLUGINS); a registry loaded before is reloaded at its next use."""
    global _registry
    have = _env_modules()
    new = [m for m in modules if m not in have]
    if new:
        os.environ[PLUGINS_ENV] = ",".join(have + new)
        with _lock:
            _registry = None


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def _distribution_of(module: str) -> tuple[str, str]:
    """(distribution, version) that provides `module` (a top-level package installed in
    development mode is its own distribution), or ("?", "?")."""
    top = module.split(".")[0]
    try:
        dists = md.packages_distributions().get(top) or [top]
        return dists[0], md.version(dists[0])
    except Exception:  # noqa: BLE001 - no metadata: the plugin still loads
        return "?", "?"


@dataclass
class PluginInfo:
    """What `tensortap plugins` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    builtin: bool
    registers: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    disabled: bool = False
    #: a framework plugin whose framework is not installed: which, and the command that installs it
    framework_missing: str | None = None
    #: the framework versions its adapters support (AdapterSpec.versions)
    supports: tuple[SupportedVersions, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.disabled

    @property
    def state(self) -> str:
        """What `tensortap plugins` says of it: ok, disabled, ERROR, or framework missing."""
        if self.disabled:
            return "disabled"
        if self.error:
            return "ERROR"
        return f"framework missing: {self.framework_missing}" if self.framework_missing else "ok"

    def to_dict(self) -> dict:
        return {
            "name": self.name, "distribution": self.distribution, "version": self.version,
            "module": self.module, "builtin": self.builtin, "registers": self.registers,
            "error": self.error, "disabled": self.disabled, "framework_missing": self.framework_missing,
            "frameworks": self.framework_versions(),
        }

    def framework_versions(self) -> list[dict[str, Any]]:
        """Each supported range with the installed version and whether it is in the range, read
        from package metadata (no framework is imported)."""
        return [v.status() for v in self.supports]


def _install_hint(distribution: str, module: str) -> str:
    """"torch is not installed: pip install 'tensortap-torch[framework]'" (the plugin's
    `framework` extra when its distribution declares one, else the module's own package)."""
    try:
        extras = md.distribution(distribution).metadata.get_all("Provides-Extra") or []
    except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
        extras = []
    cmd = f"pip install '{distribution}[framework]'" if "framework" in extras else f"pip install {module}"
    return f"{module} is not installed: {cmd}"


def _strict() -> bool:
    return os.environ.get("TENSORTAP_STRICT_PLUGINS", "").strip().lower() in ("1", "true", "yes", "on")


def _disabled() -> set:
    return {p.strip() for p in os.environ.get("TENSORTAP_DISABLE_PLUGINS", "").split(",") if p.strip()}


class Registry:
    """Everything plugins registered, by name, with the plugin that owns each name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._tables = dict(_tables)  # the tables known now (add_table after this makes a new registry)
        self.tables: dict[str, dict[str, Any]] = {t.name: {} for t in self._tables.values()}
        self.owner: dict[tuple[str, str], PluginInfo] = {}
        self._load()

    # ---- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        disabled = _disabled()
        with _lock:
            builtins = list(_builtins)
        modules = [(m, PluginInfo(m, "tensortap", __version__, m, builtin=True)) for m in builtins]
        modules += [(m, PluginInfo(m, *_distribution_of(m), m, builtin=False)) for m in _env_modules()
                    if m not in builtins]
        for modname, info in modules:
            if modname in disabled or (not info.builtin and info.distribution in disabled):
                info.disabled = True
                self.plugins.append(info)
                continue
            self._add(info, functools.partial(importlib.import_module, modname))
        if sys.version_info >= (3, 10):
            eps = md.entry_points(group=ENTRY_POINT_GROUP)
        else:
            eps = md.entry_points().get(ENTRY_POINT_GROUP, [])
        seen = set()
        for ep in sorted(eps, key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dname = dist.metadata["Name"] if dist is not None else "?"
            key = (ep.name, ep.value)
            if key in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(key)
            info = PluginInfo(ep.name, dname, dist.version if dist is not None else "?", ep.value, builtin=False)
            if ep.name in disabled or dname in disabled:
                info.disabled = True
                self.plugins.append(info)
                continue
            self._add(info, ep.load)

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        self.plugins.append(info)
        if _strict():
            raise PluginError(f"plugin {info.name!r} (distribution {info.distribution}): {message}")
        log.warning("tensortap: plugin %r (distribution %s) skipped: %s", info.name, info.distribution, message)

    def _add(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        try:
            obj = load()
        except Exception as e:  # noqa: BLE001 - any import failure is reported, not fatal
            return self._fail(info, f"import failed: {type(e).__name__}: {e}")
        unknown = [n for n in dir(obj) if n.startswith("tensortap_") and n not in KNOWN_HOOKS
                   and callable(getattr(obj, n, None))]
        if unknown:
            return self._fail(info, f"implements unknown hook(s) {unknown}." + did_you_mean(unknown[0], KNOWN_HOOKS)
                              + f" Known hooks: {sorted(KNOWN_HOOKS)}")
        try:
            self.pm.register(obj, name=f"{info.distribution}:{info.name}")
        except Exception as e:  # noqa: BLE001 - pluggy names the offending signature
            return self._fail(info, f"{type(e).__name__}: {e}")
        found: dict[str, dict[str, Any]] = {}
        try:
            for hook_name, tab in self._tables.items():
                table = tab.name
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is not obj:
                        continue
                    result = impl.function()
                    if result is None:
                        continue
                    if not isinstance(result, (list, tuple)):
                        raise PluginError(f"{hook_name} must return a list, got {type(result).__name__}")
                    for item in result:
                        name = tab.check(item)
                        if name in found.setdefault(table, {}):
                            raise PluginError(f"registers {table[:-1]} {name!r} twice")
                        found[table][name] = item
            for table, items in found.items():
                for name in items:
                    other = self.owner.get((table, name))
                    if other is not None:
                        raise PluginError(
                            f"{table[:-1]} {name!r} is registered by both distribution {other.distribution!r} "
                            f"(plugin {other.name!r}) and distribution {info.distribution!r} (plugin {info.name!r}); "
                            f"kept {other.distribution!r}'s. Uninstall one, or set "
                            f"TENSORTAP_DISABLE_PLUGINS={info.name}"
                        )
        except Exception as e:  # noqa: BLE001
            self.pm.unregister(obj)
            msg = str(e) if isinstance(e, PluginError) else f"registration failed: {type(e).__name__}: {e}"
            return self._fail(info, msg)
        for table, items in found.items():
            self.tables[table].update(items)
            for name in items:
                self.owner[(table, name)] = info
            info.registers[table] = sorted(items)
        specs = found.get("adapters", {}).values()
        info.supports = tuple(dict.fromkeys(v for spec in specs for v in spec.versions))
        missing = [m for spec in found.get("adapters", {}).values() for m in (spec.framework_missing(),) if m]
        if missing:
            info.framework_missing = "; ".join(_install_hint(info.distribution, m) for m in dict.fromkeys(missing))
        self.plugins.append(info)

    # ---- lookups ---------------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, Any]:
        return self.tables["adapters"]

    @property
    def rules(self) -> dict[str, type]:
        return self.tables["rules"]

    @property
    def visualizers(self) -> dict[str, type]:
        return self.tables["visualizers"]

    @property
    def actions(self) -> dict[str, type]:
        return self.tables["actions"]

    @property
    def collections(self) -> dict[str, Any]:
        return self.tables["collections"]

    @property
    def reductions(self) -> dict[str, Any]:
        """Plugin-registered VectorReductions by name (the built-in scalar ones are not plugins)."""
        return self.tables["reductions"]

    def get(self, table: str, name: str) -> Any:
        """The registered item, or a ConfigError that lists what exists and what is closest."""
        items = self.tables[table]
        if name in items:
            return items[name]
        kind = table[:-1]
        broken = [p for p in self.plugins if p.error and not p.builtin]
        hint = ""
        if broken:
            hint = " (plugins that failed to load: " + ", ".join(f"{p.name}: {p.error}" for p in broken) + ")"
        raise ConfigError(
            f"unknown {kind} {name!r}." + did_you_mean(name, items)
            + f" Registered {table}: {', '.join(sorted(items)) or 'none'}.{hint}"
        )

    def adapter_for(self, obj: Any):
        """The AdapterSpec whose framework `obj` (a model or tensor) belongs to, or None."""
        for spec in self.adapters.values():
            if spec.recognises(obj):
                return spec
        return None

    def call_behaviour(self, hook_name: str, **kwargs) -> None:
        """Run a behaviour hook; a plugin that raises is reported, never fatal to training."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(**kwargs)
            except Exception as e:  # noqa: BLE001
                log.warning("tensortap: plugin %s failed in %s: %s", impl.plugin_name, hook_name, e)


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry()
        return _registry


def reload_registry() -> Registry:
    """Forget and reload every plugin (after installing one, or changing the env variables)."""
    global _registry
    with _lock:
        _registry = None
        return get_registry()

