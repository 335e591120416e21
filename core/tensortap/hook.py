"""Hook: the framework-agnostic capture engine.

One training iteration is one step, counted from 0 globally and per mode. The adapter calls
`begin_step()` at the start of each iteration; on steps no collection saves, `wants()` is
False for everything and the adapter does nothing else, so an unsaved step costs a counter
increment. On saved steps captured tensors are copied to numpy and queued for the writer
thread; the step is handed over when the next one begins (or at `end_step`/`close`).
Failures inside tensortap are reported once and training goes on.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import threading
import time
import warnings
import weakref
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import modes as _modes
from .adapter import Adapter
from .closing import DEFAULT_CLOSE_TIMEOUT, check_close_timeout, record_abandoned, wait_written
from .collections import CATEGORIES, Collection
from .errors import ConfigError, StopTraining, did_you_mean, edit_distance
from .layers import LayerInfo, layers_record
from .modes import ModeKeys, to_mode
from .plugins import get_registry
from .reductions import ReductionConfig, packed_kind, reduce_numpy_packed, split_reductions
from .save_config import SaveConfig
from .store import StepBatch, StoreWriter, TensorItem
from .store.claim import WorkerClaim
from .store.fs import make_run_dir, resolve
from .store.index import is_storable
from .tokens import token_array
from .vector_reductions import VectorCapture

log = logging.getLogger("tensortap")

_storable = functools.lru_cache(maxsize=None)(is_storable)  # per dtype: checked on every capture


DEFAULT_COLLECTIONS = ("weights", "biases", "gradients", "losses", "metrics", "scalars")
CollectionArg = Union[str, Collection]


def _env_int(var: str) -> Optional[int]:
    v = os.environ.get(var)
    return int(v) if v is not None and v.strip().isdigit() else None


def _env_rank() -> Optional[int]:
    """This process's global rank from the launcher's variables: torchrun/MPI/SLURM name it; a
    launcher that only sets LOCAL_RANK and NODE_RANK (Lightning's ddp subprocess launcher) gives it
    on node 0, or on any node when LOCAL_WORLD_SIZE says how many processes a node runs."""
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        rank = _env_int(var)
        if rank is not None:
            return rank
    local, node, per_node = _env_int("LOCAL_RANK"), _env_int("NODE_RANK") or 0, _env_int("LOCAL_WORLD_SIZE")
    if local is None:
        return None
    if per_node is not None:
        return node * per_node + local
    return local if node == 0 else None


def user_collection(name: str, known) -> Collection:
    """An empty collection of the user's own (filled by get_collection(name).include(...) or by
    save_tensor(..., collections=name)); a name one edit away from a built-in one is most likely a
    typo, so it is warned about."""
    close = [k for k in known if edit_distance(name, k) <= 1]
    if close:
        warnings.warn(
            f"tensortap: include_collections has {name!r}, which is not a built-in collection; it is made as an "
            f'empty collection of your own. Did you mean "{close[0]}"?', UserWarning, stacklevel=4)
    return Collection(name, description="user collection")


def _close_at_exit(ref) -> None:
    """Close a hook the user did not close; at interpreter exit a failure is logged, not raised."""
    hook = ref()
    if hook is None:
        return
    try:
        hook.close()
    except Exception as e:  # noqa: BLE001
        log.warning("tensortap: could not close the run in %s at exit: %s", hook.out_dir, e)


class Hook:
    """Capture tensors of a training run into `out_dir` (a path or an fsspec URL).

    >>> hook = tt.Hook("runs/exp1", include_collections=["weights", "gradients", "losses"],
    ...                save_config=tt.SaveConfig(save_interval=10))
    >>> hook.register(model)
    """

    def __init__(
        self,
        out_dir,
        include_collections: Optional[Sequence[CollectionArg]] = None,
        save_config: Optional[SaveConfig] = None,
        reduction_config: Optional[ReductionConfig] = None,
        framework: Optional[str] = None,
        include_regex: Optional[Sequence[str]] = None,
        save_all: bool = False,
        *,
        rank: Optional[int] = None,
        queue_bytes: Optional[int] = None,
        on_full: str = "block",
        flush_seconds: Optional[float] = None,
        close_timeout: Optional[float] = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if out_dir is None or (isinstance(out_dir, str) and not out_dir.strip()):
            raise ConfigError("out_dir is required: pass a directory (or an fsspec URL such as s3://bucket/run)")
        self.out_dir = os.fspath(out_dir)
        self.close_timeout = check_close_timeout(close_timeout)
        make_run_dir(*resolve(self.out_dir), shown=self.out_dir)  # a bad out_dir is an error now, not at register()
        if save_config is None:
            save_config = SaveConfig()
        if not isinstance(save_config, SaveConfig):
            raise ConfigError(f"save_config must be a tt.SaveConfig, got {type(save_config).__name__}")
        if reduction_config is not None and not isinstance(reduction_config, ReductionConfig):
            raise ConfigError(f"reduction_config must be a tt.ReductionConfig, got {type(reduction_config).__name__}")
        self.save_config = save_config
        self.reduction_config = reduction_config
        self.registry = get_registry()
        if framework is not None:
            self.registry.get("adapters", framework)  # clear error for an unknown framework
        self.framework = framework
        self.collections: List[Collection] = self._resolve_collections(include_collections, include_regex, save_all)
        self._writer_options = {"on_full": on_full, "flush_seconds": flush_seconds}
        if queue_bytes is not None:
            self._writer_options["queue_bytes"] = int(queue_bytes)
        self._rank = rank
        self.adapter: Optional[Adapter] = None
        self._aux_adapters: Dict[str, Adapter] = {}
        self.writer: Optional[StoreWriter] = None
        self._lock = threading.RLock()
        # step state
        self.step = -1
        self.mode: ModeKeys = _modes.TRAIN
        self.mode_step = -1
        self._mode_counters: Dict[ModeKeys, int] = {}
        self._user_mode: Optional[ModeKeys] = None
        self._active: Tuple[Collection, ...] = ()
        self._wanted: frozenset = frozenset()
        self._batch: Optional[Dict[Tuple[str, str], TensorItem]] = None
        self._match_cache: Dict[Tuple[str, str], Tuple[Collection, ...]] = {}
        self._save_cache: Dict[Tuple[ModeKeys, int], Tuple[Collection, ...]] = {}
        self._plans: Dict[tuple, Optional[tuple]] = {}  # (name, category, active key) -> _make_plan
        self._active_keys: Dict[Tuple[int, ...], int] = {}  # active collections -> a small key
        self._wanted_of: Dict[int, frozenset] = {}  # that key -> categories adapters capture
        self._active_key = -1
        self._deferred: List[TensorItem] = []  # reductions of this step still being computed
        self._held: List[Tuple[StepBatch, List[TensorItem]]] = []  # handed over, waiting for them
        self._vectors = VectorCapture(self._report)  # plugin vector reductions of this step
        self._stop_reason: Optional[str] = None
        self._driven: FrozenSet[ModeKeys] = frozenset()  # modes whose steps a driver begins (drive_steps)
        self._tokens: Optional[np.ndarray] = None  # set_tokens: saved beside attention until replaced
        self._mode_changed = False  # set_mode switched modes: a save before the next begin_step starts one
        self._early: Dict[Tuple[str, str], tuple] = {}  # saved before the first step, for it
        self._closed = False
        self._reported: Dict[Tuple[str, str], int] = {}
        self.errors: List[str] = []
        #: what close() gave up waiting for (live rules, callbacks, webhooks), by name
        self.abandoned: List[str] = []
        self._rules = None
        self._layers: Dict[str, LayerInfo] = {}  # what describe_layers recorded, by layer name
        self._needs = None  # rules.requirements.NeedsCheck, made by the first add_rule
        # Claim this worker of the run now, not at the first write: a second writer is refused here.
        self._claim = WorkerClaim.acquire(self.out_dir, self._initial_rank())
        atexit.register(_close_at_exit, weakref.ref(self))

    # ---- configuration -----------------------------------------------------------------------
    def _initial_rank(self) -> int:
        """The rank to claim at creation: rank=, else the framework's (a plugin that sees its
        distributed job already set up), else the launcher's variables, else 0."""
        if self._rank is not None:
            return int(self._rank)
        try:
            rank = self.registry.pm.hook.tensortap_process_rank()
        except Exception as e:  # noqa: BLE001 - a plugin's failure only loses the hint
            log.warning("tensortap: a plugin failed to tell this process's rank: %s", e)
            rank = None
        if rank is None:
            rank = _env_rank()
        return int(rank or 0)

    def _known_collections(self) -> Dict[str, Collection]:
        known = {c.name: c for c in self.registry.collections.values()}
        return known

    def _resolve_collections(self, include, include_regex, save_all) -> List[Collection]:
        known = self._known_collections()
        if include is None:
            include = [n for n in DEFAULT_COLLECTIONS if n in known]
        if isinstance(include, (str, Collection)):
            include = [include]
        out: Dict[str, Collection] = {}
        for c in include:
            if isinstance(c, Collection):
                out[c.name] = c
            elif isinstance(c, str):
                if c in known:
                    k = known[c]
                    out[c] = Collection(k.name, k.include_regex, k.tensor_names, None, None, k.categories,
                                        k.description)
                else:
                    out[c] = user_collection(c, known)
            else:
                raise ConfigError(f"include_collections items must be names or tt.Collection, got {c!r}")
        if include_regex:
            if isinstance(include_regex, str):
                include_regex = [include_regex]
            out["default"] = Collection("default", tuple(include_regex))
        if save_all:
            out["all"] = Collection("all", (".*",))
        for c in out.values():
            c.on_change(self._collection_changed)
        return list(out.values())

    def _collection_changed(self) -> None:
        """A collection gained regexes or names (`get_collection(name).include(...)`): selections
        are decided again, and an attached adapter is told (it may need hooks it did not install)."""
        with self._lock:
            self._forget_plans()
            if self._active_key >= 0:  # the current step too
                self._wanted = self._wanted_of[self._active_key]
            adapter = self.adapter
        if adapter is not None:
            try:
                adapter.collections_changed()
            except Exception as e:  # noqa: BLE001
                self._report("could not apply the changed collections", e)

    def get_collection(self, name: str) -> Collection:
        """One of the hook's collections, e.g. to fill a user collection:
        `hook.get_collection("relu_activations").include("relu.*")`."""
        for c in self.collections:
            if c.name == name:
                return c
        raise ConfigError(f"collection {name!r} is not included in this hook." +
                          did_you_mean(name, [c.name for c in self.collections])
                          + f" Include it when making the hook: tt.Hook(..., include_collections=[..., {name!r}])")

    # ---- registration -----------------------------------------------------------------------
    def register(self, model: Any) -> "Hook":
        """Attach to a model; its framework is detected through the installed plugins."""
        spec = self._spec_for(model)
        with self._lock:
            cls = spec.load()
            old = self.adapter
            if not (type(old) is cls and old.model is None):  # else: made by register_loss first, keep its hooks
                if old is not None:
                    old.detach()
                self.adapter = cls(self)
            self.adapter.model = model
            self._ensure_writer()
            self.adapter.attach(model)
            self.writer.update_meta(framework=spec.name)
        return self

    def _spec_for(self, model: Any):
        reg = self.registry
        if self.framework is not None:
            spec = reg.get("adapters", self.framework)
            if not spec.recognises(model):
                raise ConfigError(
                    f"framework={self.framework!r} but the model is a {type(model).__module__}.{type(model).__name__}; "
                    "pass the matching framework or framework=None to detect it"
                )
            return spec
        spec = reg.adapter_for(model)
        if spec is None:
            installed = ", ".join(sorted(reg.adapters)) or "none"
            raise ConfigError(
                f"no installed tensortap plugin recognises a model of type "
                f"{type(model).__module__}.{type(model).__qualname__}. Installed framework plugins: {installed}. "
                "Install the plugin for your framework, e.g. `pip install tensortap-torch` "
                "(tensortap-tensorflow, tensortap-mxnet); `tensortap plugins` shows what loaded"
            )
        return spec

    def _ensure_writer(self) -> StoreWriter:
        if self.writer is None:
            rank = self._rank
            if rank is None and self.adapter is not None:
                rank = self.adapter.rank()
            if rank is None:
                rank = _env_rank() or 0
            meta = {
                "framework": self.adapter.name if self.adapter is not None else self.framework,
                "rank": rank,
                "world_size": self.adapter.world_size() if self.adapter is not None else 1,
                "collections": {c.name: {"include_regex": list(c.include_regex)} for c in self.collections},
                "save_config": self.save_config.to_dict(),
            }
            if rank != self._claim.rank:  # the framework's rank differs from the one guessed at creation
                claim = WorkerClaim.acquire(self.out_dir, rank)
                self._claim.release(remove=True)
                self._claim = claim
            self.writer = StoreWriter(self.out_dir, rank, meta, on_error=self._report, claim=self._claim,
                                      **self._writer_options)
        return self.writer

    # ---- steps -----------------------------------------------------------------------------
    def set_mode(self, mode) -> None:
        """Fix the mode (tt.modes.TRAIN / EVAL / PREDICT); None returns to the framework's own mode."""
        new = to_mode(mode)
        if self._early and self.step < 0 and (new or _modes.TRAIN) != (self._user_mode or _modes.TRAIN):
            self.begin_step()  # values saved before the first step, in the old mode, make that step
        self._user_mode = new
        # The switch takes effect at the next step. An adapter starts it with its next forward pass;
        # a save made before that (a manual loop without an adapter) starts it itself. Starting
        # the step here would leave an empty phantom step when an adapter follows.
        self._mode_changed = self._user_mode is not None and self._user_mode != self.mode and self.step >= 0

    def begin_step(self, mode=None, *, step: Optional[int] = None) -> None:
        """Start the next step (adapters call this once per training iteration; a driver, see
        `drive_steps`, for the modes it drives).

        `step` numbers the step within its mode, e.g. a trainer's global_step: numbers must grow
        (a smaller one is reported and the next free number used, so nothing saved is overwritten),
        and the current step's number again continues that step (another forward/backward pass of
        gradient accumulation) instead of starting one. The global step stays the hook's own count
        of all steps, unique and increasing across modes, but at least `step`: a run of one mode
        keeps the caller's numbers as its global steps too."""
        if self._closed:
            return
        if step is not None and self._continue_step(mode, int(step)):
            return
        with self._lock:
            self._hand_over(wait=False)
            self._mode_changed = False
            m = self._user_mode or to_mode(mode) or _modes.TRAIN
            self.mode_step = self._next_mode_step(m, step)
            self.step = self.step + 1 if step is None else max(self.step + 1, self.mode_step)
            self.mode = m
            self._mode_counters[m] = self.mode_step
            # one should_save per distinct SaveConfig (most collections share the hook's)
            hook_sc, saves, active = self.save_config, {}, []
            for c in self.collections:
                sc = c.save_config or hook_sc
                v = saves.get(id(sc))
                if v is None:
                    v = saves[id(sc)] = sc.should_save(m, self.mode_step)
                if v:
                    active.append(c)
            if active:
                self._active = active = tuple(active)
                ids = tuple(map(id, active))
                key = self._active_keys.get(ids)
                if key is None:
                    key = self._active_keys[ids] = len(self._active_keys)
                    self._wanted_of[key] = self._wanted_for(active)
                self._active_key, self._wanted = key, self._wanted_of[key]
            else:  # an unsaved step: nothing is wanted
                self._active, self._active_key, self._wanted = (), -1, frozenset()
            if self._early:
                self._save_held()
            reason = None
            if not self._driven:  # a driver takes stop requests itself (take_stop_request)
                reason, self._stop_reason = self._stop_reason, None
        if self._driven or self._tokens is not None:
            self._step_begun(m)
        if reason is not None:
            self._report_event("stop_requested", reason)
            if self.adapter is not None:
                self.adapter.stop_training(reason)
            else:
                raise StopTraining(reason)

    def _continue_step(self, mode, step: int) -> bool:
        """begin_step with the current step's own number: another pass of that step, no new step."""
        m = self._user_mode or to_mode(mode) or _modes.TRAIN
        if not (self.step >= 0 and m == self.mode and step == self.mode_step):
            return False
        if m in self._driven and self.adapter is not None:
            try:
                self.adapter.start_driven_step(first_pass=False)
            except Exception as e:  # noqa: BLE001
                self._report("could not prepare the step's capture", e)
        return True

    def _next_mode_step(self, m: ModeKeys, step: Optional[int]) -> int:
        last = self._mode_counters.get(m, -1)
        if step is None:
            return last + 1
        if int(step) <= last:
            self._report(f"step {int(step)} of mode {m.value} is not after its step {last}",
                         ConfigError(f"step numbers must grow within a mode; numbered it {last + 1} instead, "
                                     "so that no saved step is overwritten"))
            return last + 1
        return int(step)

    def _step_begun(self, m: ModeKeys) -> None:
        """After a step began: a driven step's adapter set-up, and the tokens beside its attention."""
        if m in self._driven and self.adapter is not None:
            try:
                self.adapter.start_driven_step(first_pass=True)
            except Exception as e:  # noqa: BLE001
                self._report("could not prepare the step's capture", e)
        if self._tokens is not None and "attention" in self._wanted:
            self.capture("attention/tokens", self._tokens, "attention")

    def drive_steps(self, modes: Optional[Iterable[Union[ModeKeys, str]]] = None) -> None:
        """Steps of `modes` (default: TRAIN, EVAL and PREDICT) begin only when you call
        `begin_step(mode, step=...)`: the adapter no longer starts them itself (torch: at each forward
        of the model). For trainer integrations and loops that know their steps (an optimizer step).
        While driving: call `capture_gradients()` just before the optimizer step (the gradients the
        optimizer applies), `take_stop_request()` at step boundaries (begin_step no longer raises
        tt.StopTraining), and `end_step()` leaves the hook between steps (nothing captured until the
        next begin_step). `drive_steps([])` hands steps back to the adapter."""
        driven = frozenset(_modes.ModeKeys(to_mode(m)) for m in
                           ((_modes.TRAIN, _modes.EVAL, _modes.PREDICT) if modes is None else modes))
        if _modes.GLOBAL in driven:
            raise ConfigError("drive_steps takes tt.modes.TRAIN, EVAL or PREDICT (GLOBAL is not a mode steps run in)")
        self._driven = driven

    def is_driven(self, mode=None) -> bool:
        """Does a driver begin the steps of `mode` (after set_mode's override)? Adapters ask this at a
        would-be step boundary and start a step themselves only when it is False."""
        return bool(self._driven) and (self._user_mode or to_mode(mode) or _modes.TRAIN) in self._driven

    def capture_gradients(self) -> int:
        """Capture the parameters' gradients as they are now, into the current step; returns how many
        were kept (0 when the step saves none). A driver calls it after the step's last backward pass,
        just before the optimizer step: with gradient accumulation, clipping or DDP's all-reduce, what
        is saved is what the optimizer applies."""
        if self._closed or self.adapter is None or not self.wants("gradients"):
            return 0
        try:
            return self.adapter.capture_gradients()
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self._report("could not capture the gradients", e)
            return 0

    def take_stop_request(self) -> Optional[str]:
        """The reason training was asked to stop (a rule's stop_training action, request_stop), or None;
        taking it clears it. Drivers call this at step boundaries and stop their trainer their own way."""
        with self._lock:
            reason, self._stop_reason = self._stop_reason, None
        if reason is not None:
            self._report_event("stop_requested", reason)
        return reason

    def set_tokens(self, tokens: Any) -> None:
        """Token strings of the batch about to run: one list per sequence (or one list for all of
        them). Saved as attention/tokens beside the attention of this and every later step that saves
        attention, until replaced; None clears them. The attention head view labels its rows with them."""
        self._tokens = None if tokens is None else token_array(tokens)
        if self._tokens is not None and self.step >= 0 and "attention" in self._wanted:
            self.capture("attention/tokens", self._tokens, "attention")

    def _wanted_for(self, active) -> frozenset:
        """The categories adapters should capture while `active` collections save."""
        wanted = set()
        for c in active:
            wanted.add(c.name)
            if c._pattern is not None or c.tensor_names:
                wanted.update(c.categories or CATEGORIES + tuple(self.registry.collections))
        return frozenset(wanted)

    def end_step(self) -> None:
        """Hand the current step to the writer now instead of at the next begin_step. While steps
        are driven (drive_steps), nothing more is captured until the next begin_step."""
        with self._lock:
            self._begin_if_held()
            self._hand_over()
            if self._driven:
                self._active, self._active_key, self._wanted = (), -1, frozenset()

    def _begin_if_held(self) -> None:
        """Values were saved but no step ever began (end_step/flush/close came first): they make step 0."""
        if self._early and self.step < 0 and not self._closed:
            self.begin_step()

    def _hand_over(self, wait: bool = True) -> None:
        """Queue the current step for the writer. A step whose reductions are still being computed
        (off the training thread) waits, unless `wait`, until they are ready or the next step is
        handed over: at most one step is held back; steps reach the writer in order."""
        if self.adapter is not None and self.step >= 0 and not self._closed:
            # what the adapter still holds belongs to this step, even after a set_mode switch
            changed, self._mode_changed = self._mode_changed, False
            try:
                self.adapter.finish_step()
            except Exception as e:  # noqa: BLE001
                self._report("could not finish the step", e)
            finally:
                self._mode_changed = changed
        self._vectors.clear()  # values whose gradient never came (no backward pass this step)
        batch, self._batch = self._batch, None
        deferred, self._deferred = self._deferred, []
        if batch:
            sb = StepBatch(self.step, self.mode.value, self.mode_step, list(batch.values()), time.time())
            self._held.append((sb, [it for it in deferred if batch.get((it.name, it.kind)) is it]))
        held = self._held
        while held:
            sb, pending = held[0]
            if not wait and len(held) == 1 and not all(it.array.done() for it in pending):
                return
            held.pop(0)
            if pending:
                self._resolve(sb, pending)
            self._submit(sb)

    def _resolve(self, sb: StepBatch, pending: List[TensorItem]) -> None:
        bad = False
        for it in pending:
            try:
                it.array = np.asarray(it.array.result(), dtype=np.float64)
            except Exception as e:  # noqa: BLE001
                self._report(f"could not compute the reductions of {it.name!r}", e)
                it.array, bad = None, True
        if bad:
            sb.items = [it for it in sb.items if it.array is not None]

    def _submit(self, sb: StepBatch) -> None:
        if sb.items and self._ensure_writer().submit(sb):
            if self._rules is not None:
                if self._needs is not None and self._needs.pending:  # the layers are known by now
                    try:
                        self._needs.step_saved()
                    except Exception as e:  # noqa: BLE001 - a rule's declaration must not stop training
                        self._report("could not check what the live rules read", e)
                self._rules.step_saved(sb.step)
            self.registry.call_behaviour("tensortap_step_end", hook=self, step=sb.step, mode=sb.mode)

    @property
    def saving(self) -> bool:
        """True when some collection saves the current step."""
        return bool(self._active)

    def wants(self, category: str) -> bool:
        """Should the adapter capture tensors of `category` at the current step? (cheap)"""
        return category in self._wanted

    def needs_gradient(self, name: str) -> bool:
        """Does a reduction of `name`, captured this step, wait for its gradient? Then the adapter
        should capture "gradients/<name>" (category "gradients") even if no collection keeps it."""
        return self._vectors.needs_gradient(name)

    # ---- capture ---------------------------------------------------------------------------
    def _collections_of(self, name: str, category: str) -> Tuple[Collection, ...]:
        key = (name, category)
        got = self._match_cache.get(key)
        if got is None:
            got = self._match_cache[key] = tuple(c for c in self.collections if c.includes(name, category))
        return got

    def capture(self, name: str, tensor: Any, category: str, extra_collections: Sequence[str] = ()) -> bool:
        """Store `tensor` under `name` if an active collection includes it; True if it was kept.
        Adapter-facing: errors are reported and swallowed so training goes on."""
        try:
            return self._capture(name, tensor, category, extra_collections)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self._report(f"could not capture {name!r}", e)
            return False

    def capture_many(self, items: Iterable[Tuple[str, Any, str]]) -> int:
        """`capture` for several (name, tensor, category) at once (e.g. every parameter at a step
        start): the adapter computes their reductions in one batch. Returns how many were kept."""
        try:
            if self._closed:
                return 0
            if self.step < 0 or self._mode_changed:
                self.begin_step()
            plan, vectors = self._plan, self._vectors
            items = list(items)
            if vectors.waiting:
                self._queue([v for n, t, c in items if c == "gradients" for v in vectors.on_gradient(n, t)])
            todo = [(n, t, p) for n, t, c in items for p in (plan(n, c),) if p is not None]
            if todo:
                self._store(todo)
            return len(todo)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self._report("could not capture a batch of tensors", e)
            return 0

    def _plan(self, name: str, category: str) -> Optional[tuple]:
        """What to store of `name` at steps with the current active collections, cached per name:
        None (not kept), or (raw, reductions, bins, collection names, packed kind, vector reductions)."""
        key = (name, category, self._active_key)
        try:
            return self._plans[key]
        except KeyError:
            p = self._plans[key] = self._make_plan(name, category)
            return p

    def _make_plan(self, name, category, extra_collections=(), force=False) -> Optional[tuple]:
        colls = self._collections_of(name, category)
        active = [c for c in colls if any(c is a for a in self._active)]
        if not active and not force:
            return None
        rcs = [c.reduction_config or self.reduction_config for c in (active or colls)]
        raw = force or any(rc is None or rc.save_raw_tensor for rc in rcs)
        reds, vectors = split_reductions(r for rc in rcs if rc is not None for r in rc.reductions)
        bins = max([rc.histogram_bins for rc in rcs if rc is not None] or [64])
        cnames = tuple(dict.fromkeys(tuple(c.name for c in colls) + ((category,) if force else ()) + tuple(extra_collections)))
        return raw, reds, bins, cnames, packed_kind(reds), vectors

    def _forget_plans(self) -> None:
        """Call after changing the hook's collections (their regexes or categories)."""
        self._match_cache.clear()
        self._plans.clear()
        self._wanted_of = {k: self._wanted_for(tuple(c for c in self.collections if id(c) in ids))
                           for ids, k in self._active_keys.items()}

    def _capture(self, name, tensor, category, extra_collections=(), force=False) -> bool:
        if self._closed:
            return False
        if self.step < 0 or self._mode_changed:
            self.begin_step()
        if category == "gradients" and self._vectors.waiting:
            self._queue(self._vectors.on_gradient(name, tensor))
        if force or extra_collections:
            plan = self._make_plan(name, category, extra_collections, force)
        else:
            plan = self._plan(name, category)
        if plan is None:
            return False
        self._store(((name, tensor, plan),))
        return True

    def _store(self, todo) -> None:
        """Copy (raw) and reduce what the plans ask for; reductions of one adapter, one
        configuration, go to the adapter in one `reduce_many` call."""
        items: List[TensorItem] = []
        groups: Dict[tuple, tuple] = {}
        for name, tensor, (raw, reds, bins, cnames, kind, vectors) in todo:
            adapter = self._adapter_for_value(tensor)
            if raw:
                items.append(TensorItem(name, "value", cnames, self._to_numpy(adapter, tensor, name)))
            if vectors:
                items.extend(TensorItem(*v) for v in self._vectors.on_value(name, tensor, adapter, vectors, cnames))
            if reds:
                g = groups.get((id(adapter), kind, bins))
                if g is None:
                    g = groups[(id(adapter), kind, bins)] = (adapter, reds, bins, kind, [], [])
                g[4].append((name, cnames))
                g[5].append(tensor)
        for adapter, reds, bins, kind, named, tensors in groups.values():
            if adapter is not None:
                values = adapter.reduce_many(tensors, reds, bins)
            else:
                values = [reduce_numpy_packed(self._to_numpy(None, t, n), reds, bins) for (n, _), t in zip(named, tensors)]
            items.extend(TensorItem(name, kind, cnames, v) for (name, cnames), v in zip(named, values))
        self._queue(items)

    def _queue(self, items: Iterable) -> None:
        """Put items (TensorItems, or (name, kind, collections, array) tuples) into this step's
        batch; an array that is a handle (done()/result()) is resolved before the step is written."""
        items = [it if isinstance(it, TensorItem) else TensorItem(*it) for it in items]
        if not items:
            return
        deferred = []
        for it in items:
            v = it.array
            if not isinstance(v, np.ndarray):
                if not hasattr(v, "result"):
                    it.array = np.asarray(v, dtype=np.float64)
                else:
                    deferred.append(it)
        with self._lock:
            if self._batch is None:
                self._batch = {}
            batch = self._batch
            for it in items:
                batch[(it.name, it.kind)] = it
            if deferred:
                self._deferred.extend(deferred)

    def _adapter_for_value(self, value: Any) -> Optional[Adapter]:
        if isinstance(value, (np.ndarray, np.generic, int, float, bool, complex, list, tuple)):
            return None
        if self.adapter is not None and self.adapter.is_tensor(value):
            return self.adapter
        spec = self.registry.adapter_for(value)
        if spec is None:
            return None
        a = self._aux_adapters.get(spec.name)
        if a is None:
            a = self._aux_adapters[spec.name] = spec.load()(self)
        return a

    def _to_numpy(self, adapter: Optional[Adapter], value: Any, name: str) -> Optional[np.ndarray]:
        arr = adapter.to_numpy(value) if adapter is not None else np.array(value, copy=True)
        if not isinstance(arr, np.ndarray):
            arr = np.array(arr, copy=True)
        if not _storable(arr.dtype):
            raise ConfigError(
                f"cannot save {name!r}: dtype {arr.dtype} (only bool, int, float incl. bfloat16/float8, complex "
                "and fixed-width strings are stored; convert objects first, e.g. np.asarray(x, dtype=str))"
            )
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        return arr

    # ---- what the layers are ------------------------------------------------------------------
    def describe_layers(self, layers: Iterable[LayerInfo]) -> None:
        """Record what each layer is (class, kind: tensortap.layers.LayerInfo) in the run, once per
        layer: adapters call this when they attach (or first see a layer), never per step. Rules
        find layers by kind through it (trial.layer_kind); a layer described again unchanged costs
        a dict lookup."""
        try:
            with self._lock:
                new = [info for info in layers if self._layers.get(info.name) != info]
                if not new or self._closed:
                    return
                self._layers.update((info.name, info) for info in new)
                self._ensure_writer().submit_record(layers_record(new))
        except Exception as e:  # noqa: BLE001 - a description must never stop training
            self._report("could not record the model's layer classes", e)

    @property
    def layers(self) -> Dict[str, LayerInfo]:
        """layer name -> LayerInfo of every layer described so far (describe_layers)."""
        return dict(self._layers)

    # ---- user-facing saves -------------------------------------------------------------------
    def record_loss(self, loss: Any, name: str = "loss") -> None:
        """Record a loss value (a framework scalar tensor or a number) in collection "losses"."""
        self._user_save(name, loss, "losses")

    def register_loss(self, loss_obj: Any, name: str = "loss") -> None:
        """Record the output of a loss module/block every time it is called."""
        adapter = self.adapter
        if adapter is None:
            spec = self._spec_for(loss_obj)
            adapter = self.adapter = spec.load()(self)
            self._ensure_writer()
        adapter.register_loss(loss_obj, name)

    def save_scalar(self, name: str, value: Any, *, collection: str = "scalars") -> None:
        """Save a number (accuracy, learning rate, ...) in `collection` ("scalars"; trainer
        integrations pass "losses" / "metrics" for what the trainer logs), at the current step,
        every time it is called: scalars are cheap and often once-per-epoch, so they do not follow
        the hook's save_interval (give that collection its own save_config to thin them)."""
        own = next((c for c in self.collections if c.name == collection and c.save_config is not None), None)
        self._user_save(name, value, collection, always=own is None)

    def save_tensor(self, name: str, value: Any, collections: Union[str, Sequence[str]] = ("default",)) -> None:
        """Save any array under `name` at the current step, tagged with `collections`.

        It is written when one of the hook's collections includes it at this step, or, for
        collection names the hook does not include, on every step the hook saves anything."""
        if isinstance(collections, str):
            collections = [collections]
        collections = list(collections) or ["default"]
        self._user_save(name, value, collections[0], tuple(collections[1:]))

    def _user_save(self, name, value, category, extra=(), always: bool = False) -> None:
        """A save the user asked for by name: it follows the save config of the collections
        that include it; if the hook includes none of them, it is kept on every step the hook
        saves anything (so record_loss/save_scalar always land beside the tensors)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tensor names must be non-empty strings, got {name!r}")
        if self._closed:
            return
        if self.step < 0:  # before the first step: it belongs to that step, not to one of its own
            return self._hold(name, value, category, extra, always)
        if self._mode_changed:
            self.begin_step()
        if not (always or self._active):  # an unsaved step keeps nothing: the common case, kept cheap
            return
        force = always or not self._collections_of(name, category)  # (past the return, the step saves)
        try:
            self._capture(name, value, category, extra, force=force)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self._report(f"could not save {name!r}", e)

    def _hold(self, name, value, category, extra, always: bool) -> None:
        """Keep a value saved before the first step (a copy, as it is now) for that step; the
        last one saved under a name wins, as within a step."""
        try:
            arr = self._to_numpy(self._adapter_for_value(value), value, name)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            self._report(f"could not save {name!r}", e)
            return
        with self._lock:
            self._early[(name, category)] = (arr, extra, always)

    def _save_held(self) -> None:
        """Save the values held for the first step (it has just begun)."""
        early, self._early = self._early, {}
        for (name, category), (arr, extra, always) in early.items():
            self._user_save(name, arr, category, extra, always)

    # ---- rules -------------------------------------------------------------------------------
    def add_rule(self, rule, action=None) -> None:
        """Evaluate `rule` on every saved step, off the training thread; run `action` when it fires
        ("stop_training", "log", an Action, a callable, or a list of these)."""
        from .rules.live import LiveRules

        from .rules.requirements import NeedsCheck

        with self._lock:
            if self._rules is None:
                self._rules = LiveRules(self)
            self._rules.add(rule, action)
            if self._needs is None:
                self._needs = NeedsCheck(self)
        self._needs.added(rule)

    def request_stop(self, reason: str) -> None:
        """Ask training to stop at the next step boundary (what the stop_training action calls)."""
        self._stop_reason = reason

    # ---- errors ------------------------------------------------------------------------------
    def _report(self, what: str, exc: BaseException) -> None:
        # one key per kind of failure: names (quoted) and step numbers do not make a new kind
        key = (re.sub(r"\d+", "#", what.split("'")[0]), type(exc).__name__)
        n = self._reported.get(key, 0)
        self._reported[key] = n + 1
        msg = f"{what}: {type(exc).__name__}: {exc}"
        if len(self.errors) < 1000:  # bounded: a disk full for a week must not grow memory
            self.errors.append(msg)
        if n == 0:
            log.warning("tensortap: %s (training continues; further errors like this are counted, not logged)", msg)
        w = self.writer
        if w is not None and n < 3:
            w.submit_record({"type": "event", "event": "error", "what": what, "error": str(exc), "time": time.time()})

    def _report_event(self, event: str, detail: str) -> None:
        if self.writer is not None:
            self.writer.submit_record({"type": "event", "event": event, "detail": detail, "time": time.time()})

    @property
    def stats(self):
        """Writer statistics: steps/tensors/bytes written, steps dropped, write errors."""
        return self.writer.stats if self.writer is not None else None

    # ---- framework extras --------------------------------------------------------------------
    def _framework_adapter(self, name: str) -> Adapter:
        if self.adapter is not None and self.adapter.name == name:
            return self.adapter
        spec = self.registry.get("adapters", name)
        self.adapter = spec.load()(self)
        self._ensure_writer()
        self.writer.update_meta(framework=name)
        return self.adapter

    def keras_callback(self):
        """A Keras callback that captures through this hook (tensortap-tensorflow)."""
        return self._framework_adapter("tensorflow").keras_callback()

    def wrap_tape(self, tape):
        """Wrap a tf.GradientTape so gradients and the loss are recorded (tensortap-tensorflow)."""
        return self._framework_adapter("tensorflow").wrap_tape(tape)

    # ---- closing -----------------------------------------------------------------------------
    def flush(self, timeout: Optional[float] = None) -> bool:
        """Hand over the current step and wait until everything is on disk (readable by a trial)."""
        with self._lock:
            self._begin_if_held()
            self._hand_over()
        return self.writer.flush(timeout) if self.writer is not None else True

    def close(self, timeout: Optional[float] = None) -> None:
        """Write everything, record the live rule results, and close the run. Safe to call twice.

        Live rules, callbacks and webhooks get `timeout` seconds (default: the hook's
        close_timeout, 10 s) to finish; what they have not finished then is abandoned, named in a
        warning, in `hook.abandoned` and in a `close_abandoned` event of the run. Writing the
        captured data is not cut short (nor counted in that time): every step is written first."""
        if self._closed:
            return
        limit = self.close_timeout if timeout is None else check_close_timeout(timeout)
        with self._lock:
            self._begin_if_held()
            self._hand_over()
            self._closed = True
        if self.writer is not None:  # live rules read the last steps back: readable first
            wait_written(self.writer, self.out_dir, readable=self._rules is not None)
        if self._rules is not None:
            self.abandoned = self._rules.close(limit)
        if self.adapter is not None:
            try:
                self.adapter.detach()
            except Exception as e:  # noqa: BLE001
                self._report("could not detach", e)
        if self.writer is None:
            try:
                self._ensure_writer()
            except ConfigError as e:  # register() already failed on this; closing must not raise again
                log.warning("tensortap: %s closed without a run: %s", self.out_dir, e)
                self._claim.release(remove=True)
                return
        record_abandoned(self, self.abandoned, limit)
        wait_written(self.writer, self.out_dir, readable=False)  # close() below makes it readable
        self.writer.close()
        self.registry.call_behaviour("tensortap_run_closed", hook=self, out_dir=self.out_dir)

    def disown(self) -> None:
        """Stop capturing in this process without writing or closing anything: for a forked child
        (a DataLoader worker) that inherited the hook of the process whose run it is."""
        self._closed = True

    def __enter__(self) -> "Hook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Hook out_dir={self.out_dir!r} framework={self.adapter.name if self.adapter else self.framework} step={self.step}>"
