"""The run session of one process of `tensortap run`: the configuration, the hook (made when a
plugin's instrumentation finds the model), and what is left for the summary at exit.

Framework specifics live in the plugins: an AdapterSpec names an `instrument` class (a subclass
of `Instrumentation`) which the session installs once one of the spec's `model_modules` has been
imported. It patches the framework (the optimizer, `Model.fit`, the Gluon Trainer, ...) and calls
`session.attach(model, how)` when it has found the model; the first model attached is the run's.
"""
from __future__ import annotations

import atexit
import functools
import inspect
import json
import logging
import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, cast

from ..adapter import Handle
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..hook import Hook

log = logging.getLogger("tensortap")

BOOT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.py")


def boot():
    """The process's boot module (`_tensortap_boot`), loaded by path if start-up did not."""
    mod = sys.modules.get("_tensortap_boot")
    if mod is not None:
        return mod
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tensortap_boot", BOOT_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_tensortap_boot"] = mod
    spec.loader.exec_module(mod)
    return mod


class Instrumentation:
    """What a framework plugin implements for `tensortap run` (named by AdapterSpec.instrument).

    `install()` runs once the framework's module has been imported; it patches what it needs
    with `self.session.patch(...)` and calls `self.session.attach(model, how)` when it finds the
    model. Its module must not import the framework at top level (the summary reads
    `looks_for` in a process without it).
    """

    #: what it looks for, in words (the warning when a script had nothing to instrument)
    looks_for: Tuple[str, ...] = ()

    def __init__(self, session: "Session", framework: str) -> None:
        self.session = session
        self.framework = framework

    def install(self) -> None:
        raise NotImplementedError

    def after(self, what: str, fn: Callable[..., None]) -> Callable[[Callable], Callable]:
        """For session.patch: a method that runs the original, then fn(self_obj, *args, **kwargs);
        a failure in fn is reported (`could not {what}`) and the user's call goes on."""
        session = self.session

        def make(original: Callable) -> Callable:
            @functools.wraps(original)
            def wrapper(obj, *args, **kwargs):
                out = original(obj, *args, **kwargs)
                try:
                    fn(obj, *args, **kwargs)
                except Exception as e:  # noqa: BLE001 - the user's object is made whatever happens here
                    session.report(f"could not {what}", e)
                return out
            return wrapper

        return make


class Losses:
    """Loss modules/blocks of a script, in creation order (weakly held); each is registered with
    the run's hook once there is one: the first as "loss", later ones "loss_1", "loss_2", ..."""

    def __init__(self, session: "Session") -> None:
        self.session = session
        self._made: List[Any] = []
        self.registered: "weakref.WeakSet" = weakref.WeakSet()

    def made(self, obj: Any, *_args, **_kwargs) -> None:
        """A loss object was constructed (use as `Instrumentation.after(..., losses.made)`)."""
        self._made.append(weakref.ref(obj))
        if self.session.model is not None:
            self.register()

    def register(self) -> None:
        hook = self.session.hook
        if hook is None:
            return
        for obj in [r() for r in self._made]:
            if obj is None or obj in self.registered:
                continue
            k = len(self.registered)
            self.registered.add(obj)
            hook.register_loss(obj, "loss" if k == 0 else f"loss_{k}")


class Session:
    """One process's part of a `tensortap run`."""

    def __init__(self, config_path: str, out_dir: Optional[str] = None) -> None:
        from ..hook import _env_rank
        from .config import load

        self.config = load(config_path)
        out = out_dir or self.config.out_dir
        if not out:
            raise ConfigError(f'{config_path}: out_dir is not set; add out_dir = "..." or use '
                              "`tensortap run --out DIR`")
        self.out_dir: str = out
        self.hook: Optional[Hook] = None
        self.model: Any = None
        self.attached: List[str] = []
        self.skipped: List[str] = []
        self.errors: List[str] = []
        self.imported: List[str] = []
        self.installed: Dict[str, Instrumentation] = {}
        self._handles: List[Handle] = []
        self._lock = threading.RLock()
        rank = _env_rank()
        self.disabled = self.config.include_workers == "one" and rank not in (None, 0)
        self.forked = False
        atexit.register(self.close)

    # ---- what plugins call -------------------------------------------------------------------
    def framework_imported(self, module: str) -> None:
        """A watched module was imported: install the instrumentation of every plugin it belongs to."""
        from ..plugins import get_registry

        self.imported.append(module)
        for spec in get_registry().adapters.values():
            if module not in spec.model_modules or not spec.instrument or spec.name in self.installed:
                continue
            if self.config.framework not in (None, spec.name):
                continue
            inst = spec.load_instrument()(self, spec.name)
            self.installed[spec.name] = inst
            inst.install()

    def when_imported(self, module: str, fn: Callable[[Any], None]) -> None:
        """Call fn(module) once `module` (top-level) has been imported (now if it already is)."""
        boot().when_imported(module, fn)

    def patch(self, owner: Any, attr: str, make: Callable[[Callable], Callable]) -> Handle:
        """Replace owner.attr (a class or module attribute) by make(original); undone at close."""
        original = owner.__dict__[attr] if isinstance(owner, type) and attr in owner.__dict__ else getattr(owner, attr)
        new = make(original)
        cast(Any, new).__tensortap_original__ = original
        setattr(owner, attr, new)

        def restore() -> None:
            if getattr(owner, "__dict__", {}).get(attr) is new:
                setattr(owner, attr, original)

        h = Handle(restore)
        self._handles.append(h)
        return h

    def on_close(self, remove: Callable[[], None]) -> Handle:
        """Call `remove` when the run closes (after the hook): for what an instrumentation added
        besides patches, e.g. a framework hook's removal."""
        h = Handle(remove)
        self._handles.append(h)
        return h

    def attach(self, model: Any, how: str, register: Optional[Callable[[Any], None]] = None) -> Optional[Any]:
        """Make the run's hook and register `model` with it (`register(hook)` if given, else
        hook.register(model)); the first model is the run's, later ones are noted and skipped.
        Returns the hook, or None when the model is not attached (never raises)."""
        with self._lock:
            if self.disabled or self.forked:
                return None
            if self.model is not None:
                if model is not self.model and how not in self.skipped:
                    self.skipped.append(how)
                    log.warning("tensortap: %s is not instrumented: this run already follows %s (one model per run)",
                                how, self.attached[0])
                return self.hook if model is self.model else None
            try:
                if self.hook is None:
                    self.hook = self.config.make_hook(self.out_dir)
                if register is not None:
                    register(self.hook)
                else:
                    self.hook.register(model)
            except Exception as e:  # noqa: BLE001 - the script must run on, without tensortap
                self.errors.append(f"{how}: {type(e).__name__}: {e}")
                log.warning("tensortap: could not instrument %s (%s: %s); the script runs without tensortap",
                            how, type(e).__name__, e)
                self.disabled = True
                return None
            self.model = model
            self.attached.append(how)
            return self.hook

    def report(self, what: str, exc: BaseException) -> None:
        """A failure inside an instrumentation: said once, the script goes on."""
        msg = f"{what}: {type(exc).__name__}: {exc}"
        if msg not in self.errors:
            self.errors.append(msg)
            log.warning("tensortap: %s", msg)

    # ---- process life ------------------------------------------------------------------------
    def forked_child(self) -> None:
        """In a forked child (a DataLoader worker): no hook; the parent's stays the parent's."""
        self.forked = True
        hook, self.hook = self.hook, None
        if hook is not None:
            hook.disown()

    def close(self) -> None:
        """At exit: close the run, export it for TensorBoard if asked, leave the status file."""
        if self.forked:
            return
        hook = self.hook
        if hook is not None:
            try:
                hook.close()
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"closing the run: {type(e).__name__}: {e}")
            tb = self.config.tensorboard_out(self.out_dir)
            if tb and self.attached:
                try:
                    from ..export.tensorboard import export_tensorboard

                    export_tensorboard(self.out_dir, tb)
                except Exception as e:  # noqa: BLE001
                    self.errors.append(f"TensorBoard export to {tb}: {type(e).__name__}: {e}")
        while self._handles:
            self._handles.pop().remove()
        self._write_status()

    def status(self) -> Dict[str, Any]:
        return {"pid": os.getpid(), "argv": list(sys.argv), "out_dir": self.out_dir, "attached": self.attached,
                "skipped": self.skipped, "errors": self.errors + list(getattr(self.hook, "errors", []) or [])[:20],
                "imported": self.imported, "instrumented_frameworks": sorted(self.installed),
                "looked_for": [t for i in self.installed.values() for t in i.looks_for], "disabled": self.disabled}

    def _write_status(self) -> None:
        d = os.environ.get(boot().STATUS_ENV)
        if not d or not os.path.isdir(d):
            return
        try:
            with open(os.path.join(d, f"{os.getpid()}.json"), "w", encoding="utf-8") as f:
                json.dump(self.status(), f)
        except OSError as e:
            log.warning("tensortap: could not leave the run's status in %s: %s", d, e)


# ---- helpers for instrumentations ----------------------------------------------------------------
def objects_in_frames(accept: Callable[[Any], bool], skip_modules: Iterable[str], depth: int = 12) -> List[Any]:
    """Objects that `accept` in the local and global variables of the calling frames, innermost
    first, skipping frames of modules under `skip_modules` (the framework's and tensortap's own),
    and what those objects hold as a `model` attribute (a trainer's model)."""
    skip = tuple(skip_modules) + ("tensortap",)
    out: List[Any] = []
    seen = set()

    def add(obj: Any) -> None:
        if id(obj) not in seen and accept(obj):
            seen.add(id(obj))
            out.append(obj)

    frame = inspect.currentframe()
    try:
        f = frame.f_back if frame is not None else None
        n = 0
        while f is not None and n < depth:
            mod = f.f_globals.get("__name__", "") or ""
            if not any(mod == s or mod.startswith(s + ".") for s in skip):
                n += 1
                for scope in (f.f_locals, f.f_globals if n == 1 else {}):
                    for v in list(scope.values()):
                        add(v)
                        inner = getattr(v, "model", None) if not isinstance(v, type) else None
                        if inner is not None:
                            add(inner)
            f = f.f_back
    finally:
        del frame
    return out


def made_by_user(framework: Iterable[str], libraries: Iterable[str]) -> bool:
    """Is the first caller outside the framework's own modules (and tensortap's) the user's code,
    rather than a library under `libraries` (a model's forward building a loss module, say)?"""
    skip = tuple(framework)
    libs = tuple(libraries)
    frame = inspect.currentframe()
    try:
        f = frame.f_back if frame is not None else None
        while f is not None:
            mod = f.f_globals.get("__name__", "") or ""
            if not mod.startswith("tensortap") and not any(mod == s or mod.startswith(s + ".") for s in skip):
                return not any(mod == s or mod.startswith(s + ".") for s in libs)
            f = f.f_back
        return False
    finally:
        del frame


def holder_of(param_ids: set, candidates: Iterable[Any], params_of: Callable[[Any], Iterable[Any]]) -> Optional[Any]:
    """The candidate model holding every parameter in `param_ids` (by id), the largest if several
    do (the whole model rather than one of its layers); None if none does."""
    best, best_n = None, -1
    for m in candidates:
        pids = {id(p) for p in params_of(m)}
        if param_ids <= pids and len(pids) > best_n:
            best, best_n = m, len(pids)
    return best


_session: Optional[Session] = None
_session_lock = threading.Lock()


def get_session() -> Session:
    """This process's session (made on first use from TENSORTAP_CONFIG / TENSORTAP_RUN_OUT)."""
    global _session
    with _session_lock:
        if _session is None:
            b = boot()
            path = os.environ.get(b.CONFIG_ENV)
            if not path:
                raise ConfigError(f"{b.CONFIG_ENV} is not set: run the script with `tensortap run` or set "
                                  f"{b.CONFIG_ENV}=path/to/tensortap.toml")
            _session = Session(path, os.environ.get(b.OUT_ENV))
        return _session


def current_session() -> Optional[Session]:
    return _session


def forked_child() -> None:
    """Called by the boot module in a forked child process."""
    if _session is not None:
        _session.forked_child()


def active_hook():
    """The hook `tensortap run` attached in this process, or None (not a run, nothing found yet,
    a DataLoader worker)."""
    return _session.hook if _session is not None else None
