"""The start of every Python process of a `tensortap run` (or of any process with TENSORTAP_CONFIG
set, through the tensortap-autorun.pth file the tensortap distribution installs).

This module imports only the standard library: it runs at interpreter start-up, before the
user's script, so it must not import numpy (a script may set OMP_NUM_THREADS before its own
import) nor tensortap. It is loaded by file path (`load()`), as module `_tensortap_boot`.

What it does:
- watches for the first import of each framework module a tensortap plugin instruments
  (TENSORTAP_RUN_PREPARED, a JSON list the run command computed); once such a module has
  finished importing, tensortap.zerocode.session instruments it;
- without the `tensortap run` wrapper (TENSORTAP_CONFIG alone), the first process checks the
  configuration in a subprocess before the script starts (a bad file stops it there, exit 2),
  and prints the run's summary when it exits;
- a tensortap StopTraining that reaches the top of the script ends it cleanly (a message,
  exit status 0) instead of with a traceback;
- in a forked child (a DataLoader worker) the inherited hook is disowned: no hook there.
"""
from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
from typing import Callable, Dict, List, Optional

CONFIG_ENV = "TENSORTAP_CONFIG"
#: set by `tensortap run` (or by the first process): JSON list of module names to watch
PREPARED_ENV = "TENSORTAP_RUN_PREPARED"
#: directory where every process of the run leaves its status file
STATUS_ENV = "TENSORTAP_RUN_STATUS"
#: the run directory `tensortap run --out` chose
OUT_ENV = "TENSORTAP_RUN_OUT"
#: pid of the process that prints the summary when there is no wrapper
ROOT_ENV = "TENSORTAP_RUN_ROOT"

_lock = threading.RLock()
_callbacks: Dict[str, List[Callable[[object], None]]] = {}
_done: set = set()
_active = False
stop_message: Optional[str] = None


def _warn(msg: str) -> None:
    try:
        sys.stderr.write(f"tensortap: {msg}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - no stderr: nothing to tell
        pass


# ---- import watching ------------------------------------------------------------------------
class _Loader(importlib.abc.Loader):
    """The real loader of a watched module, then the callbacks once the module has executed."""

    def __init__(self, inner, name: str) -> None:
        self._inner, self._name = inner, name

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        self._inner.exec_module(module)
        # the module is in sys.modules with the real loader again: it is the framework's own
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._inner
        try:
            module.__loader__ = self._inner
        except AttributeError:  # pragma: no cover - extension modules may refuse
            pass
        _fire(self._name, module)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of a watched top-level module the first time it is imported."""

    def __init__(self) -> None:
        self._busy = threading.local()

    def find_spec(self, fullname, path, target=None):
        if fullname not in _callbacks or fullname in _done or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None:
                for finder in sys.meta_path:
                    if finder is self or not hasattr(finder, "find_spec"):
                        continue
                    spec = finder.find_spec(fullname, path, target)
                    if spec is not None:
                        break
        finally:
            self._busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader, fullname)
        return spec


_finder = _Finder()


def when_imported(name: str, fn: Callable[[object], None]) -> None:
    """Call fn(module) once top-level module `name` has been imported (now, if it already is)."""
    with _lock:
        mod = sys.modules.get(name)
        # a module still executing (a framework importing another one) is not imported yet: its
        # callbacks run when it finishes
        run_now = mod is not None and not getattr(getattr(mod, "__spec__", None), "_initializing", False)
        if run_now:
            _done.add(name)
        else:
            _callbacks.setdefault(name, []).append(fn)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    if run_now:
        _call(name, fn, mod)


def _fire(name: str, module) -> None:
    with _lock:
        _done.add(name)
        fns = _callbacks.pop(name, [])
    for fn in fns:
        _call(name, fn, module)


def _call(name: str, fn, module) -> None:
    try:
        fn(module)
    except Exception as e:  # noqa: BLE001 - instrumenting must never break the user's import
        _warn(f"could not instrument {name} ({type(e).__name__}: {e}); the script runs without it")


def _instrument(module) -> None:
    from tensortap.zerocode.session import get_session

    get_session().framework_imported(module.__name__)


# ---- the stop of a rule ---------------------------------------------------------------------
def _excepthook(exc_type, exc, tb) -> None:
    global stop_message
    if exc_type.__name__ == "StopTraining" and (exc_type.__module__ or "").startswith("tensortap"):
        stop_message = str(exc)
        _warn(f"training stopped: {exc}")
        return
    _previous_excepthook(exc_type, exc, tb)


_previous_excepthook = sys.excepthook


def _exit_after_stop() -> None:
    """Registered first, so it runs last at exit: a run a rule stopped ends with status 0."""
    if stop_message is not None:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(0)


# ---- forks ------------------------------------------------------------------------------------
def _after_fork_in_child() -> None:
    mod = sys.modules.get("tensortap.zerocode.session")
    if mod is not None:
        mod.forked_child()


# ---- start-up ---------------------------------------------------------------------------------
def _prepare_without_wrapper(config: str) -> None:
    """TENSORTAP_CONFIG alone: check the file in a subprocess (this process must not import
    tensortap yet), before the script starts; this process will print the summary."""
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    proc = subprocess.run([sys.executable, "-m", "tensortap.zerocode.prepare", config], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr if proc.stderr.strip() else f"tensortap: could not check {config}\n")
        sys.stderr.flush()
        os._exit(2)
    info = json.loads(proc.stdout)
    os.environ[PREPARED_ENV] = json.dumps(info["watch"])
    os.environ.setdefault(OUT_ENV, info["out_dir"])
    os.environ[STATUS_ENV] = tempfile.mkdtemp(prefix="tensortap-run-")
    os.environ[ROOT_ENV] = str(os.getpid())
    atexit.register(_summary_at_exit)


def _summary_at_exit() -> None:
    if os.environ.get(ROOT_ENV) != str(os.getpid()):
        return
    try:
        from tensortap.zerocode.report import finish

        finish(os.environ[STATUS_ENV], os.environ[OUT_ENV], cleanup=True)
    except Exception as e:  # noqa: BLE001
        _warn(f"could not summarise the run ({type(e).__name__}: {e})")


def activate() -> None:
    """Install the watchers (once per process) when TENSORTAP_CONFIG is set."""
    global _active
    config = os.environ.get(CONFIG_ENV)
    if not config or _active:
        return
    _active = True
    atexit.register(_exit_after_stop)
    if PREPARED_ENV not in os.environ:
        _prepare_without_wrapper(config)
    sys.excepthook = _excepthook
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    try:
        names = json.loads(os.environ[PREPARED_ENV])
    except ValueError:
        _warn(f"{PREPARED_ENV} is not a JSON list; nothing is instrumented")
        return
    for name in names:
        when_imported(name, _instrument)


def load(path: str):
    """The boot module as `_tensortap_boot`: one instance per process, whoever loads it first
    (sitecustomize, the .pth file, or the session)."""
    mod = sys.modules.get("_tensortap_boot")
    if mod is None:
        spec = importlib.util.spec_from_file_location("_tensortap_boot", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"tensortap: cannot load its boot module {path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_tensortap_boot"] = mod
        spec.loader.exec_module(mod)
    return mod
