"""The runs `tensortap serve` shows: found under a path (a run, a folder of runs, an fsspec URL),
each opened with `tt.create_trial` and refreshed by one watcher thread."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import ConfigError
from ..store import layout
from ..store.fs import is_local, join, resolve
from ..trial import Trial, create_trial
from . import rulelog
from .series import SeriesCache
from .state import RunState, run_state

log = logging.getLogger("tensortap.serve")

#: how deep under the served folder runs are looked for, and how many are shown at most
MAX_DEPTH = 4
MAX_RUNS = 500
#: a growing run's size (a sum over every step) is recomputed at most this often
BYTES_EVERY = 3.0
#: how often an open run that wrote nothing new is checked for a dead writer
STATE_EVERY = 1.0
#: seconds between attempts to open a run that could not be opened
RETRY_EVERY = 2.0
#: runs being opened at once
_OPENING = threading.BoundedSemaphore(2)


def describe_error(e: BaseException) -> str:
    """One sentence for the page: what went wrong reading the run (no traceback)."""
    from ..errors import TensorTapError

    text = str(e).strip() or type(e).__name__
    if isinstance(e, TensorTapError):
        return text
    if isinstance(e, PermissionError):
        return f"permission denied reading the run ({text}); check the files' permissions"
    return f"could not read the run ({type(e).__name__}: {text})"


def display(text: str) -> str:
    """A path or name made safe to encode (undecodable bytes from the file system shown as U+FFFD)."""
    return text.encode("utf-8", "replace").decode("utf-8")


class Run:
    """One run on the page: its Trial (or the error opening it), a lock around every use of the
    Trial, a version bumped by every change seen, and what is derived from it, cached."""

    def __init__(self, rid: str, path: str, name: str) -> None:
        self.id, self.path, self.name = rid, path, name
        self.lock = threading.RLock()
        self.trial: Optional[Trial] = None
        self.error: Optional[str] = None
        self.version = 0
        self.series = SeriesCache()
        self._seen: Optional[tuple] = None
        self._rules = rulelog.RuleLogs()
        self._rules_ver: Optional[tuple] = None
        self._summary: Optional[dict] = None
        self._summary_ver: Optional[tuple] = None
        self._bytes: Tuple[int, Optional[tuple], float] = (0, None, 0.0)  # (bytes, at version, at time)
        self._state: Optional[str] = None  # the state last shown, and when it was last checked
        self._state_at = 0.0
        self.derived: Dict[Tuple, Tuple[tuple, object]] = {}  # other views' caches: key -> (version, value)
        self.kept: Dict[Any, Any] = {}  # what views extend as the run grows (e.g. Grad-CAM's shared scale)
        self._opener: Optional[threading.Thread] = None
        self._tried = -1e9
        self._shown: Tuple[bool, Optional[str]] = (False, None)

    # ---- keeping up -------------------------------------------------------------------------
    def _open(self) -> None:
        """Open the trial and read its scalar series, outside the lock (the page meanwhile shows the
        run as opening), then publish it; a failure is kept as the run's error."""
        with _OPENING:  # a few at a time: a folder of many runs does not start hundreds of reads
            try:
                trial = create_trial(self.path)
                series = SeriesCache()
                warm(trial, series)
            except Exception as e:  # noqa: BLE001 - a bad run is shown as such, never raised
                with self.lock:
                    self.error = describe_error(e)
                return
        with self.lock:
            self.trial, self.series, self.error = trial, series, None

    def _failed(self, e: BaseException) -> bool:
        msg = describe_error(e)
        changed = msg != self.error
        self.error = msg
        if changed:
            self.version += 1
        return changed

    def poll(self) -> bool:
        """Open the run if not yet open (on a thread of its own: a big run does not hold up the
        others), else read what was written since; True if anything changed."""
        if self.trial is None:
            th = self._opener
            if th is None:
                if time.monotonic() - self._tried < RETRY_EVERY:
                    return False
                self._tried = time.monotonic()
                self._opener = threading.Thread(target=self._open, daemon=True, name="tensortap-serve-open")
                self._opener.start()
                return False
            if th.is_alive():
                return False
            self._opener = None
            with self.lock:
                shown = (self.trial is not None, self.error)
                if shown == self._shown:
                    return False  # the same error again
                self._shown = shown
                self.version += 1
                return True
        with self.lock:
            try:
                self.trial.refresh()
            except Exception as e:  # noqa: BLE001 - a bad run is shown as such, never raised
                return self._failed(e)
            ver = self.trial.version
            if ver != self._seen:
                self._seen = ver
                self.version += 1
                return True
            stale = False
            now = time.monotonic()
            if self._bytes[1] not in (None, ver) and now - self._bytes[2] > BYTES_EVERY:
                stale = True  # the size shown is older than the run: have it recomputed
            if now - self._state_at >= STATE_EVERY and not self.trial.is_complete():
                self._state_at = now  # a writer can die without writing anything: look again
                state = self.state().state
                stale = stale or (self._state is not None and state != self._state)
                self._state = state
            if stale:
                self._summary_ver = None
                self.version += 1
            return stale

    def close(self) -> None:
        with self.lock:
            if self.trial is not None:
                self.trial.close()

    def opened(self) -> Trial:
        """The run's Trial; views use it only once the run is open (views._trial says so otherwise)."""
        if self.trial is None:
            raise RuntimeError(self.error or "the run is still being opened")
        return self.trial

    # ---- derived, cached -----------------------------------------------------------------------
    def cached(self, key: Tuple, make: Callable[[], object]):
        """`make()` once per version of the trial; the 8 latest keys are kept."""
        ver = self.opened().version
        got = self.derived.pop(key, None)
        if got is None or got[0] != ver:
            got = (ver, make())
        self.derived[key] = got  # most recently used last
        while len(self.derived) > 8:
            self.derived.pop(next(iter(self.derived)))
        return got[1]

    def rules(self) -> Dict[str, rulelog.RuleLog]:
        """rule -> RuleLog, extended with the new results when the trial changed."""
        trial = self.opened()
        ver = trial.version
        if self._rules_ver != ver:
            self._rules.update(trial)
            self._rules_ver = ver
        return self._rules.logs

    def state(self) -> RunState:
        return run_state(self.trial)

    def last_summary(self) -> dict:
        """The summary last computed (without the lock), for when the run is busy."""
        base = {"id": self.id, "name": self.name, "path": display(self.path), "version": self.version}
        if self._summary is None:
            return {**base, "state": "opening", "detail": "busy reading…", "error": self.error}
        return {**self._summary, **base, "error": self.error}

    def summary(self) -> dict:
        """What the runs list shows about this run."""
        base = {"id": self.id, "name": self.name, "path": display(self.path), "version": self.version}
        if self.trial is None:
            return {**base, "state": "unreadable" if self.error else "opening",
                    "detail": self.error or "opening…", "error": self.error}
        t = self.trial
        ver = t.version
        if self._summary is not None and self._summary_ver == ver:
            return {**self._summary, **base, "error": self.error}
        steps = t.steps()
        now = time.monotonic()
        if self._bytes[1] is None or (self._bytes[1] != ver and now - self._bytes[2] > BYTES_EVERY):
            self._bytes = (t.total_bytes(), ver, now)  # a sum over every step: not at every poll
        rules = self.rules()
        counts = {k: 0 for k in rulelog.OUTCOMES}
        for rl in rules.values():
            for k, v in rl.counts().items():
                counts[k] += v
        st = self.state()
        self._state = st.state
        self._summary = {
            "state": st.state, "detail": st.detail, "last_write": st.last_write,
            "steps": len(steps), "first_step": steps[0] if steps else None, "last_step": steps[-1] if steps else None,
            "workers": t.workers(), "bytes": self._bytes[0], "tensors": len(t.tensor_names()),
            "framework": t.framework, "rules": {"rules": len(rules), **counts,
                                                 "fired_rules": sorted(n for n, rl in rules.items()
                                                                       if rl.counts()["fired"])},
            "problems": len(t.problems),
        }
        self._summary_ver = ver
        return {**self._summary, **base, "error": self.error}


def warm(trial: Trial, series: SeriesCache) -> None:
    """Read a run's scalar series now (the watcher does, when it opens the run), so that the first
    page asking for them does not wait for every step to be read."""
    from ..vis.scalars import scalar_names

    try:
        for name in scalar_names(trial)[:64]:
            series.get(trial, name)
    except Exception:  # noqa: BLE001 - the page asks again and shows what fails
        log.debug("tensortap serve: warming %s failed", trial.path, exc_info=True)


def _run_id(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]


class Catalog:
    """Every run under `path`, rescanned every `scan_every` seconds, each polled every `interval`
    seconds by `poll()` (the server's watcher thread calls it). Waiters on `changed` wake on any change."""

    def __init__(self, path: str, interval: float = 0.5, scan_every: float = 2.0,
                 max_depth: int = MAX_DEPTH, max_runs: int = MAX_RUNS) -> None:
        self.path = str(path)
        self.fs, self.root = resolve(self.path)
        if not self.fs.exists(self.root):
            raise ConfigError(f"{self.path!r} does not exist: give a run directory, a folder of runs, or an "
                              "fsspec URL such as s3://bucket/prefix")
        if not self.fs.isdir(self.root):
            raise ConfigError(f"{self.path!r} is a file: give a run directory or a folder of runs")
        self.local = is_local(self.fs)
        self.interval = float(interval)
        self.scan_every = float(scan_every)
        self.max_depth, self.max_runs = int(max_depth), int(max_runs)
        self.runs: Dict[str, Run] = {}
        self.version = 0
        self.scan_note = ""
        self.changed = threading.Condition()
        self._last_scan = -1e9
        self._lock = threading.Lock()

    # ---- discovery ------------------------------------------------------------------------------
    def _is_run(self, entries: List[str]) -> bool:
        return layout.RUN_MARKER in entries or layout.WORKERS_DIR in entries

    def _children(self, d: str) -> Tuple[List[str], List[str]]:
        """(entry names, sub-directory names) of directory `d`."""
        if self.local:
            names, dirs = [], []
            with os.scandir(d) as it:
                for e in it:
                    names.append(e.name)
                    if e.is_dir(follow_symlinks=False):
                        dirs.append(e.name)
            return names, dirs
        if hasattr(self.fs, "invalidate_cache"):
            self.fs.invalidate_cache(d)
        got = self.fs.ls(d, detail=True)
        names = [g["name"].rstrip("/").rsplit("/", 1)[-1] for g in got]
        dirs = [n for n, g in zip(names, got) if g.get("type") == "directory"]
        return names, dirs

    def scan(self) -> List[Tuple[str, str]]:
        """(run path, name shown) of every run under the path, breadth first, at most max_runs."""
        found: List[Tuple[str, str]] = []
        queue = [(self.root, 0)]
        self.scan_note = ""
        while queue:
            d, depth = queue.pop(0)
            try:
                names, dirs = self._children(d)
            except (OSError, ValueError) as e:
                if d == self.root:
                    self.scan_note = f"cannot list {display(self.path)}: {describe_error(e)}"
                continue
            if self._is_run(names):
                rel = d[len(self.root):].strip("/")
                name = rel or d.rstrip("/").rsplit("/", 1)[-1] or d
                found.append((d if self.local else self.fs.unstrip_protocol(d), display(name)))
                if len(found) >= self.max_runs:
                    self.scan_note = f"showing the first {self.max_runs} runs found"
                    break
                continue
            if depth < self.max_depth:
                queue += [(join(d, n), depth + 1) for n in sorted(dirs) if not n.startswith((".", "__"))]
        return found

    # ---- keeping up -----------------------------------------------------------------------------
    def poll(self) -> bool:
        """Rescan (when due) and poll every run; wakes the waiters if anything changed."""
        changed = False
        now = time.monotonic()
        if now - self._last_scan >= self.scan_every:
            self._last_scan = now
            found = self.scan()
            ids = {}
            for path, name in found:
                ids[_run_id(path)] = (path, name)
            with self._lock:
                for rid in [r for r in self.runs if r not in ids]:
                    self.runs.pop(rid).close()
                    changed = True
                for rid, (path, name) in ids.items():
                    if rid not in self.runs:
                        self.runs[rid] = Run(rid, path, name)
                        changed = True
        for run in list(self.runs.values()):
            changed = run.poll() or changed
        if changed:
            with self.changed:
                self.version += 1
                self.changed.notify_all()
        return changed

    def get(self, rid: str) -> Optional[Run]:
        return self.runs.get(rid)

    def all(self) -> List[Run]:
        with self._lock:
            return sorted(self.runs.values(), key=lambda r: r.name)

    def versions(self) -> Dict[str, int]:
        return {r.id: r.version for r in self.all()}

    def wait(self, since: int, timeout: float) -> int:
        """Block until the catalog's version is past `since` (or `timeout`); returns the version."""
        with self.changed:
            if self.version == since:
                self.changed.wait(timeout)
            return self.version

    def close(self) -> None:
        for r in self.all():
            r.close()
