"""Reading a run, finished or still being written: `tt.create_trial(path)`.

Steps are global by default (`mode=None`); pass a mode to use that mode's own step counter.
With several workers, `worker=None` reads the lowest-ranked worker that has the value.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

import numpy as np

from .errors import (ConfigError, CorruptRunError, NotARunError, StepNotFound, TensorNotFound, WriterGoneError,
                     did_you_mean)
from .layers import LayerInfo, read_layers, split_layer_tensor
from .modes import ModeKeys, to_mode
from .reductions import REDUCTIONS, parse_packed, split_histogram, unpack
from .store import WorkerReader, layout, safe_io
from .store.liveness import DEAD_AFTER_SECONDS
from .store.fs import is_local, join, resolve
from .store.reader import DirWatch
from .store.status import DEAD, WorkerStatus, WriterStatus, run_status, worker_status

__all__ = ["create_trial", "Trial", "Tensor", "WriterStatus", "WorkerStatus"]

VALUE = "value"
_MODES = {m.value: m for m in ModeKeys}  # what a step's stored mode string stands for
REDUCTION = "reduction:"


def create_trial(path, name: Optional[str] = None, wait_seconds: float = 0.0) -> "Trial":
    """Open the run at `path` (local path or fsspec URL). `wait_seconds` waits for a run that
    has not started writing yet (a live reader started before training)."""
    deadline = time.monotonic() + float(wait_seconds)
    while True:
        try:
            return Trial(path, name=name)
        except NotARunError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _compile(regex) -> Optional["re.Pattern"]:
    if regex is None:
        return None
    pats = [regex] if isinstance(regex, str) else list(regex)
    try:
        return re.compile("|".join(f"(?:{p})" for p in pats))
    except re.error as e:
        raise ConfigError(f"invalid regex {regex!r}: {e}") from None


def _rank(worker: str) -> int:
    m = layout.WORKER_RE.match(worker)
    return int(m.group(1)) if m else 1 << 30


class Trial:
    """A run: its workers, steps, tensors, rule results. Cheap to create: reads only the index."""

    def __init__(self, path, name: Optional[str] = None) -> None:
        self.path = str(path)
        self.name = name or self.path.rstrip("/").rsplit("/", 1)[-1]
        self.fs, self.root = resolve(path)
        if not self.fs.exists(self.root):
            raise NotARunError(f"no run at {self.path!r}: the path does not exist (pass the out_dir given to tt.Hook)")
        if not self.fs.isdir(self.root):
            raise NotARunError(f"{self.path!r} is a file, not a run directory (pass the out_dir given to tt.Hook)")
        if not self.fs.exists(join(self.root, layout.RUN_MARKER)) and not self.fs.exists(
            join(self.root, layout.WORKERS_DIR)
        ):
            raise NotARunError(
                f"{self.path!r} is not a tensortap run (no {layout.RUN_MARKER} or workers/ inside); "
                "pass the out_dir given to tt.Hook"
            )
        self._real = os.path.realpath(self.root) if is_local(self.fs) else ""
        self._check_format()
        self._workers: Dict[str, WorkerReader] = {}
        # caches of answers of several kinds, by a key naming the question:
        self._cache: Dict[Any, Any] = {}  # what the index says; cleared when it changes
        self._struct: Dict[Any, Any] = {}  # what only name definitions decide
        self._versions: tuple = ()
        self._names_versions: tuple = ()
        self._watch = DirWatch(join(self.root, layout.WORKERS_DIR)) if is_local(self.fs) else None
        self._layer_map: Dict[str, LayerInfo] = {}  # what the "layers" records read so far say
        self._layers_read: Dict[str, int] = {}  # worker -> how many of its records were looked at for them
        self._layers_version = 0  # bumped by every "layers" record read
        if self._watch is not None:
            safe_io.inside(self._real, self._watch.path)  # a workers/ linked from elsewhere is refused
        self.refresh()

    def _check_format(self) -> None:
        """Refuse, with the fix, a run written in a store format newer than this reader knows."""
        try:
            raw = safe_io.read_small(self.fs, is_local(self.fs), self._real, join(self.root, layout.RUN_MARKER))
        except (FileNotFoundError, IsADirectoryError):
            return
        except CorruptRunError as e:
            raise NotARunError(f"{self.path!r}: {e}") from None
        try:
            info = safe_io.loads(raw, layout.RUN_MARKER)
        except ValueError:
            return  # damaged marker: the workers' own meta.json is checked too
        fv = info.get("format_version") if isinstance(info, dict) else None
        if isinstance(fv, int) and fv > layout.FORMAT_VERSION:
            from ._version import __version__

            raise NotARunError(
                f"{self.path!r} was written in tensortap store format {fv}; this tensortap ({__version__}) "
                f"reads formats up to {layout.FORMAT_VERSION}. Upgrade tensortap to read it "
                "(pip install -U tensortap)."
            )

    # ---- freshness -------------------------------------------------------------------------
    def refresh(self) -> int:
        """Pick up workers and steps written since the last call; returns the count of new steps."""
        try:
            if self._watch is not None:
                entries = self._watch.names()
            else:
                if hasattr(self.fs, "invalidate_cache"):
                    self.fs.invalidate_cache(join(self.root, layout.WORKERS_DIR))
                entries = self.fs.ls(join(self.root, layout.WORKERS_DIR), detail=False)
        except FileNotFoundError:
            entries = []
        for p in entries:
            w = p.rstrip("/").rsplit("/", 1)[-1]
            if layout.WORKER_RE.match(w) and w not in self._workers:
                self._workers[w] = WorkerReader(self.fs, self.root, w, self._real)
        new = sum(r.refresh() for r in self._workers.values())
        versions = tuple((w, r.version) for w, r in self._workers.items())
        if versions != self._versions:  # something new (else keep what was derived from the index)
            self._versions = versions
            self._cache.clear()
            names_versions = tuple((w, r.names_version) for w, r in self._workers.items())
            if names_versions != self._names_versions:
                self._names_versions = names_versions
                self._struct.clear()
        return new

    @property
    def version(self) -> tuple:
        """Changes whenever `refresh()` read anything new (steps, names, rule results, events, the
        end of the run): a live viewer compares it to know when to redraw."""
        return self._versions

    def is_complete(self) -> bool:
        """True once every worker closed its run cleanly (Hook.close / interpreter exit)."""
        return bool(self._workers) and all(r.ended for r in self._workers.values())

    def wait_for_steps(self, steps: Iterable[int], mode=None, timeout: Optional[float] = None,
                       poll: float = 0.2) -> bool:
        """Block until every step in `steps` is readable; False on timeout or if the run closed without
        them. WriterGoneError when the writer stopped without closing the run (no more steps will
        come: killed, crashed), naming the last step it wrote; that is looked at (at most once a
        second) whenever a look found nothing new, and before returning False on timeout."""
        want = set(int(s) for s in steps)
        deadline = None if timeout is None else time.monotonic() + timeout
        checked, progressed = -1.0e9, False
        while True:
            have = set(self.steps(mode=mode))
            if want <= have:
                return True
            if self.is_complete():
                return False
            now = time.monotonic()
            timed_out = deadline is not None and now >= deadline
            if timed_out or (not progressed and now - checked >= 1.0):  # is anyone still writing?
                checked = now
                self.check_writer()
                if want <= set(self.steps(mode=mode)):  # check_writer took a last look
                    return True
            if timed_out:
                return False
            time.sleep(poll)
            progressed = bool(self.refresh())

    def writer_status(self, dead_after: float = DEAD_AFTER_SECONDS) -> WriterStatus:
        """Whether the run is still being written: "complete", "alive", "dead" (stopped without
        closing the run) or "unknown", with each worker's pid, host, start, last heartbeat and last
        step. A writer on this machine is alive while its process runs; one elsewhere while its
        heartbeat (refreshed every 10 s) is at most `dead_after` seconds old."""
        return run_status(tuple(worker_status(self._workers[w], dead_after) for w in self.workers()))

    def check_writer(self, dead_after: float = DEAD_AFTER_SECONDS) -> WriterStatus:
        """writer_status(), raising WriterGoneError when the writer is gone without closing the run
        (after a last look at what it wrote)."""
        status = self.writer_status(dead_after)
        if status.state != DEAD:
            return status
        self.refresh()
        status = self.writer_status(dead_after)
        if status.state != DEAD:
            return status
        last = "none" if status.last_step is None else str(status.last_step)
        raise WriterGoneError(
            f"the writer of {self.path} stopped without closing the run ({status.detail}); the last step "
            f"written is {last} and no more will come. Read what was saved (it is intact), or run training again")

    # ---- structure --------------------------------------------------------------------------
    def workers(self) -> List[str]:
        """Worker names ("worker-0", ...) by rank."""
        got = self._cache.get("workers")
        if got is None:
            got = self._cache["workers"] = sorted(self._workers, key=_rank)
        return list(got)

    def _readers(self, worker: Optional[str] = None) -> List[WorkerReader]:
        if worker is None:
            got = self._cache.get("readers")
            if got is None:
                got = self._cache["readers"] = [self._workers[w] for w in self.workers()]
            return got
        if isinstance(worker, int):
            worker = layout.worker_name(worker)
        r = self._workers.get(worker)
        if r is None:
            raise ConfigError(f"no worker {worker!r} in {self.path}." + did_you_mean(worker, self._workers)
                              + f" Workers: {self.workers()}")
        return [r]

    @property
    def metadata(self) -> dict:
        """meta.json of the lowest-ranked worker (framework, versions, configuration)."""
        rs = self._readers()
        return dict(rs[0].meta) if rs else {}

    @property
    def framework(self) -> Optional[str]:
        return self.metadata.get("framework")

    @property
    def problems(self) -> List[str]:
        """Damage the reader detected and skipped: torn or corrupt records, missing or misplaced
        segments, data files the index needs that are gone, and the torn tail a writer that died
        left (with a line saying it died)."""
        out = [p for r in self._readers() for p in r.problems]
        for r in self._readers():
            st = None if r.ended else worker_status(r)
            out += r.file_problems(writer_gone=st is not None and st.state == DEAD)
            if st is not None and st.state == DEAD:
                last = max(r.steps) if r.steps else None
                out.append(f"{r.worker}: the writer stopped without closing the run ({st.detail}); "
                           f"its last step is {last}")
        return out

    def steps(self, mode=None, worker: Optional[str] = None) -> List[int]:
        """Saved steps, sorted: global steps, or `mode`'s own steps."""
        m = to_mode(mode)
        key = ("steps", m, worker)
        if key not in self._cache:
            out: Set[int] = set()
            for r in self._readers(worker):
                if m is None or m == ModeKeys.GLOBAL:
                    out.update(r.steps)
                else:
                    out.update(ms for (md, ms) in r.mode_steps if md == m.value)
            self._cache[key] = sorted(out)
        return list(self._cache[key])

    def last_step(self, mode=None) -> Optional[int]:
        s = self.steps(mode)
        return s[-1] if s else None

    def _global(self, r: WorkerReader, step: int, mode) -> Optional[int]:
        m = to_mode(mode)
        if m is None or m == ModeKeys.GLOBAL:
            return step if step in r.steps else None
        return r.mode_steps.get((m.value, int(step)))

    def mode(self, step: int) -> Optional[ModeKeys]:
        """The mode a global step was saved in."""
        for r in self._readers():
            si = r.steps.get(step)
            if si is not None:
                m = _MODES.get(si.mode)
                return m if m is not None else to_mode(si.mode)
        return None

    def mode_step(self, step: int) -> Optional[int]:
        for r in self._readers():
            si = r.steps.get(step)
            if si is not None:
                return si.mode_step
        return None

    def step_time(self, step: int) -> Optional[float]:
        """Wall-clock time (time.time()) at which a global step was handed to the writer, or None."""
        times = [r.steps[step].time for r in self._readers() if step in r.steps]
        return max(times) if times else None

    def global_step(self, mode, mode_step: int) -> Optional[int]:
        for r in self._readers():
            g = self._global(r, mode_step, mode)
            if g is not None:
                return g
        return None

    def _names(self, worker=None) -> Dict[str, set]:
        """name -> collections, over the chosen workers."""
        key = ("names", worker)
        got = self._struct.get(key)
        if got is None:
            got = {}
            for r in self._readers(worker):
                for name, _kind, colls in r.names.values():
                    got.setdefault(name, set()).update(colls)
            self._struct[key] = got
        return got

    def tensor_names(self, collection: Union[str, Iterable[str], None] = None, regex=None, step=None,
                     mode=None, worker: Optional[str] = None,
                     layer_kind: Union[str, Iterable[str], None] = None) -> List[str]:
        """Names of saved tensors, filtered by collection(s), regex (any match), presence at a step,
        and `layer_kind`: inputs/outputs of layers of that kind ("relu", or several; see layer_kind())."""
        colls = None
        if collection is not None:
            colls = frozenset([collection] if isinstance(collection, str) else collection)
        key = ("tnames", colls, regex if regex is None or isinstance(regex, str) else tuple(regex), worker)
        out = self._struct.get(key)  # the filter by collection and regex: until names change
        if out is None:
            pat = _compile(regex)
            out = self._struct[key] = [n for n, cs in self._names(worker).items()
                                       if (colls is None or cs & colls) and (pat is None or pat.search(n))]
        if step is not None:
            at = self._names_at(step, mode, worker)
            out = [n for n in out if n in at]
        elif mode is not None:
            msteps = set(self.steps(mode=mode, worker=worker))
            out = [n for n in out if msteps & set(self.tensor(n).steps(mode=mode, worker=worker))]
        if layer_kind is not None:
            kinds = frozenset([layer_kind] if isinstance(layer_kind, str) else layer_kind)
            self._layer_infos()
            lkey = ("lkind", kinds, worker, self._layers_version)  # until names or layer records change
            of_kind = self._struct.get(lkey)
            if of_kind is None:
                of_kind = self._struct[lkey] = {n for n in self._names(worker) if self.layer_kind(n) in kinds}
            out = [n for n in out if n in of_kind]
        return sorted(out)

    # ---- layers -------------------------------------------------------------------------------
    def _layer_infos(self) -> Dict[str, LayerInfo]:
        """The layer descriptions read so far, updated from records not looked at yet (incremental:
        the records also hold every rule result)."""
        for w, r in self._workers.items():
            recs = r.records
            start = self._layers_read.get(w, 0)
            if start < len(recs):
                for rec in recs[start:]:
                    if rec.get("type") == "layers":
                        self._layer_map.update((info.name, info) for info in read_layers(rec))
                        self._layers_version += 1
                self._layers_read[w] = len(recs)
        return self._layer_map

    def layers(self) -> Dict[str, LayerInfo]:
        """layer name -> LayerInfo (class, kind, fused activation) of every layer the adapter
        described; {} for a run that recorded none (written before tensortap recorded layer
        classes, saved by hand, or without layer inputs/outputs)."""
        return dict(self._layer_infos())

    def layer_of(self, tensor_name: str) -> Optional[LayerInfo]:
        """The recorded layer whose input or output `tensor_name` is ("1/output_0" -> layer "1"), or None."""
        split = split_layer_tensor(tensor_name)
        return self._layer_infos().get(split[0]) if split is not None else None

    def layer_kind(self, tensor_name: str) -> Optional[str]:
        """The kind of layer `tensor_name` is the input or output of ("relu" for "1/output_0" of an
        nn.ReLU); for the outputs of a layer with a fused activation (Keras Dense(activation="relu"))
        that activation's kind. None when the layer was not recorded or the tensor is no layer's."""
        split = split_layer_tensor(tensor_name)
        if split is None:
            return None
        info = self._layer_infos().get(split[0])
        return info.kind_of(split[1]) if info is not None else None

    def _nids(self, r: WorkerReader) -> Dict[str, List[int]]:
        """name -> its name ids (value and reductions) in one worker, cached until refresh."""
        key = ("nids", r.worker)
        got = self._struct.get(key)
        if got is None:
            got = {}
            for (n, _kind), nid in r.nid_of.items():
                got.setdefault(n, []).append(nid)
            self._struct[key] = got
        return got

    def _red_nids(self, r: WorkerReader) -> Dict[str, List[Tuple[int, Tuple[str, ...], bool]]]:
        """name -> [(nid, reductions it holds, packed?)] in one worker: packed vectors
        ("reductions:a,b") and the one-record-per-reduction kinds of older runs ("reduction:a")."""
        key = ("rnids", r.worker)
        got = self._struct.get(key)
        if got is None:
            got = {}
            for (n, kind), nid in r.nid_of.items():
                names = parse_packed(kind)
                if names is not None:
                    got.setdefault(n, []).append((nid, names, True))
                elif kind.startswith(REDUCTION):
                    got.setdefault(n, []).append((nid, (kind[len(REDUCTION):],), False))
            self._struct[key] = got
        return got

    def _names_at(self, step: int, mode, worker) -> set:
        """Names with a value or a reduction saved at `step`, cached until the index changes."""
        key = ("at", int(step), to_mode(mode), worker)
        got = self._cache.get(key)
        if got is None:
            got = set()
            for r in self._readers(worker):
                g = self._global(r, int(step), mode)
                if g is not None:
                    names = r.names
                    got.update(names[nid][0] for nid in r.steps[g].entries["nid"].tolist() if nid in names)
            self._cache[key] = got
        return got

    def collections(self) -> Dict[str, List[str]]:
        """collection name -> sorted tensor names."""
        out: Dict[str, set] = {}
        for n, cs in self._names().items():
            for c in cs:
                out.setdefault(c, set()).add(n)
        return {c: sorted(v) for c, v in sorted(out.items())}

    def has_tensor(self, name: str) -> bool:
        return name in self._names()

    def tensor(self, name: str) -> "Tensor":
        if name not in self._names():
            raise TensorNotFound(
                f"no tensor named {name!r} in {self.path}." + did_you_mean(name, self._names())
                + " (trial.tensor_names() lists them)"
            )
        return Tensor(self, name)

    def values_at(self, names: Iterable[str], step: int, mode=None, worker: Optional[str] = None
                  ) -> Dict[str, np.ndarray]:
        """The values of several tensors at one step, read together: neighbouring records come
        in one request (cheaper than one `tensor(n).value(step)` each). Names without a value
        there, or whose value cannot be read, are left out (`value()` says why)."""
        by_reader: Dict[str, list] = {}
        for n in names:
            for r in self._readers(worker):
                g = self._global(r, int(step), mode)
                if g is None:
                    continue
                nid = r.nid_of.get((n, VALUE))
                si = r.steps[g]
                if nid is not None and si.has(nid):
                    by_reader.setdefault(r.worker, []).append((n, si, nid))
                    break
        out: Dict[str, np.ndarray] = {}
        for w, items in by_reader.items():
            got = self._workers[w].read_many([(si, nid, f"{n!r} at step {si.step}") for n, si, nid in items])
            out.update((n, v) for (n, _, _), v in zip(items, got) if isinstance(v, np.ndarray))
        return out

    # ---- records beside the tensors -----------------------------------------------------------
    def rule_results(self) -> List[dict]:
        """Every rule evaluation recorded in the run (live rules), in write order per worker: one
        dict per result (rule, step, fired, message, values, skipped, checked, outcome, time,
        worker), whether it was written as a record of its own ("rule") or with the others of its
        step ("rules"). `outcome` is "fired", "quiet" or "skipped"; `checked` (tensors checked) is
        None in records written before tensortap counted them."""
        return self.rule_results_since(None)[0]

    def rule_results_since(self, cursor: Optional[Dict[str, int]] = None) -> Tuple[List[dict], Dict[str, int]]:
        """The rule results recorded after `cursor` (what the previous call returned; None: from the
        start), as rule_results() gives them, and the cursor to pass next time: a live viewer reads
        only what is new instead of every result again."""
        from .rules.results import outcome_of

        cursor = dict(cursor or {})
        out = []
        for r in self._readers():
            recs = r.records
            for rec in recs[cursor.get(r.worker, 0):]:
                kind = rec.get("type")
                if kind == "rule":
                    out.append(dict(rec, worker=r.worker))
                elif kind == "rules":
                    out.extend(_expand_results(rec, r.worker))
            cursor[r.worker] = len(recs)
        for d in out:
            d.setdefault("checked", None)
            d["outcome"] = outcome_of(d.get("fired"), d.get("skipped"))
        return out, cursor

    def events(self) -> List[dict]:
        """Notices the writer recorded: dropped steps, write errors, stop requests."""
        return [dict(rec, worker=r.worker) for r in self._readers() for rec in r.records if rec.get("type") == "event"]

    def total_bytes(self) -> int:
        """Payload bytes of every stored array (what `tensortap ls` reports)."""
        return int(sum(int(si.entries["nbytes"].sum()) for r in self._readers() for si in r.steps.values()))

    def close(self) -> None:
        for r in self._workers.values():
            r.close()

    def _repr_html_(self) -> str:
        from .reprs import trial_html

        return trial_html(self)

    def __repr__(self) -> str:
        return (f"<Trial {self.path!r}: {len(self.steps())} steps, {len(self._names())} tensors, "
                f"workers={self.workers()}>")


class Tensor:
    """One named tensor of a trial, across steps, modes and workers."""

    def __init__(self, trial: Trial, name: str) -> None:
        self.trial = trial
        self.name = name

    @property
    def collections(self) -> List[str]:
        return sorted(self.trial._names().get(self.name, ()))

    def _locate(self, step: int, mode, worker, kind: str):
        t = self.trial
        tried_any = False
        for r in t._readers(worker):
            nid = r.nid_of.get((self.name, kind))
            g = t._global(r, int(step), mode)
            if g is None:
                continue
            tried_any = True
            if nid is not None and r.steps[g].has(nid):
                return r, r.steps[g], nid
        m = to_mode(mode)
        where = f"{m.value} step {step}" if m is not None and m != ModeKeys.GLOBAL else f"step {step}"
        if not tried_any:
            raise StepNotFound(f"{where} was not saved in {t.path} (saved steps: {_short(t.steps(mode))})",
                               reason="a step it reads was not saved (trial.steps() lists the saved ones)")
        colls = ("collection " + " or ".join(repr(c) for c in self.collections)) if self.collections else \
            "the collection that saves it"
        if kind == VALUE:
            reds = self.reduction_names(step, mode, worker)
            if reds:
                raise StepNotFound(
                    f"only reductions of {self.name!r} were saved at {where}: "
                    f"use reduction_value(step, name) with one of {reds}",
                    reason=f"only reductions of {self.name!r} were saved ({', '.join(reds)}); this rule reads its "
                    f"values: set save_raw_tensor=True in the hook's reduction_config, or give {colls} its own "
                    f"tt.ReductionConfig(save_raw_tensor=True)")
            raise StepNotFound(f"{self.name!r} was not saved at {where} (its steps: {_short(self.steps(mode))})",
                               reason=f"{self.name!r} was not saved at a step it reads (the save_config of {colls} "
                               "decides where)")
        saved = self.reduction_names(step, mode, worker)
        if kind == REDUCTION:
            raise StepNotFound(f"no reduction of {self.name!r} was saved at {where}",
                               reason=f"no reduction of {self.name!r} was saved: give the hook, or {colls}, a "
                               "reduction_config")
        red = kind[len(REDUCTION):]
        raise StepNotFound(
            f"reduction {red!r} of {self.name!r} was not saved at {where} (saved there: {saved or 'none'})",
            reason=f"reduction {red!r} of {self.name!r} was not saved: add {red!r} to the reductions of the "
            f"reduction_config that covers {colls}")

    def value(self, step: int, mode=None, worker: Optional[str] = None) -> np.ndarray:
        """The array exactly as captured at `step` (bit-exact, read-only view of fresh memory)."""
        r, si, nid = self._locate(step, mode, worker, VALUE)
        return r.read(si, nid, f"{self.name!r} at step {si.step}")

    def _reductions_at(self, step: int, mode, worker):
        """[(reader, step index, nid, names, packed)] of the records holding reductions of this
        tensor at `step`, lowest-ranked worker first."""
        t = self.trial
        out = []
        for r in t._readers(worker):
            g = t._global(r, int(step), mode)
            if g is None:
                continue
            si = r.steps[g]
            out += [(r, si, nid, names, packed) for nid, names, packed in t._red_nids(r).get(self.name, ())
                    if si.has(nid)]
        return out

    def reduction_value(self, step: int, name: str, mode=None, worker: Optional[str] = None, abs: bool = False):
        """A saved reduction ("l2", "mean", ...): a float, or (counts, edges) for "histogram", or a
        1-D float64 array for a reduction a plugin registered (tt.VectorReduction, e.g. one value per channel).
        `abs=True` asks for the reduction of |x| ("max" -> "abs_max", which min and max also give),
        as in smdebug."""
        if abs and name in ("min", "max", "mean"):
            name = "abs_" + name
        found = self._reductions_at(step, mode, worker)
        if name == "abs_max" and not any(name in f[3] for f in found):  # exact from min and max when saved
            have = {n for f in found for n in f[3]}
            if {"min", "max"} <= have:
                lo, hi = (self.reduction_value(step, n, mode, worker) for n in ("min", "max"))
                return max(-lo, hi) if lo == lo and hi == hi else float("nan")
        for r, si, nid, names, packed in found:
            if name in names:
                v = r.read(si, nid, f"{name} of {self.name!r} at step {si.step}")
                if packed:
                    return unpack(v, names, name)
                if name == "histogram":
                    return split_histogram(v)
                return float(v) if v.ndim == 0 else v
        self._locate(step, mode, worker, REDUCTION + name)  # raises the StepNotFound that says why
        raise StepNotFound(f"reduction {name!r} of {self.name!r} was not saved at step {step}")  # pragma: no cover

    def reduction_values(self, step: int, mode=None, worker: Optional[str] = None) -> Dict[str, object]:
        """Every reduction saved for this tensor at `step`: name -> float, or (counts, edges)."""
        out: Dict[str, object] = {}
        for r, si, nid, names, packed in self._reductions_at(step, mode, worker):
            if all(n in out for n in names):
                continue
            v = r.read(si, nid, f"reductions of {self.name!r} at step {si.step}")
            for n in names:
                if n not in out:
                    out[n] = unpack(v, names, n) if packed else (
                        split_histogram(v) if n == "histogram" else (float(v) if v.ndim == 0 else v))
        if not out:
            self._locate(step, mode, worker, REDUCTION)  # raises the StepNotFound that says why
        return {n: out[n] for n in sorted(out, key=_reduction_order)}

    def reduction_names(self, step: int, mode=None, worker=None) -> List[str]:
        return sorted({n for *_, names, _p in self._reductions_at(step, mode, worker) for n in names})

    def steps(self, mode=None, worker: Optional[str] = None, kind: Optional[str] = None) -> List[int]:
        """Steps at which this tensor (its value, or with kind=None any reduction too) was saved."""
        t = self.trial
        key = ("tsteps", self.name, to_mode(mode), worker, kind)
        if key in t._cache:
            return list(t._cache[key])
        m = to_mode(mode)
        out = set()
        for r in t._readers(worker):
            nids = [nid for nid in t._nids(r).get(self.name, ()) if kind is None or r.names[nid][1] == kind]
            if not nids:
                continue
            for g, si in r.steps.items():
                if any(si.has(nid) for nid in nids):
                    if m is None or m == ModeKeys.GLOBAL:
                        out.add(g)
                    elif si.mode == m.value:
                        out.add(si.mode_step)
        t._cache[key] = sorted(out)
        return sorted(out)

    def values(self, mode=None, worker: Optional[str] = None) -> Dict[int, np.ndarray]:
        return {s: self.value(s, mode=mode, worker=worker) for s in self.steps(mode, worker, kind=VALUE)}

    def workers(self, step: Optional[int] = None, mode=None) -> List[str]:
        out = []
        for w in self.trial.workers():
            if step is None:
                if self.steps(worker=w):
                    out.append(w)
            elif int(step) in self.steps(mode=mode, worker=w):
                out.append(w)
        return out

    def _repr_html_(self) -> str:
        from .reprs import tensor_html

        return tensor_html(self)

    def __repr__(self) -> str:
        return f"<Tensor {self.name!r} in {self.trial.name!r}>"


def _expand_results(rec: dict, worker: str) -> List[dict]:
    """The results of a "rules" record, each as a "rule" record would hold it (malformed rows,
    from a damaged or foreign run, are skipped)."""
    fields, rows = rec.get("fields"), rec.get("results")
    if not isinstance(fields, list) or not isinstance(rows, list):
        return []
    out = []
    for row in rows:
        if isinstance(row, list) and len(row) == len(fields):
            d = dict(zip(fields, row))
            if isinstance(d.get("rule"), str):
                out.append({"type": "rule", **d, "time": rec.get("time"), "worker": worker})
    return out


def _reduction_order(name: str) -> Tuple[int, str]:
    """Built-in reductions in their usual order, then plugin-registered (vector) ones by name."""
    return (REDUCTIONS.index(name) if name in REDUCTIONS else len(REDUCTIONS), name)


def _short(steps: List[int]) -> str:
    if len(steps) <= 8:
        return str(steps)
    return f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}] ({len(steps)} steps)"
