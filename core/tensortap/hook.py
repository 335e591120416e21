"""Hook: what a user makes to capture a training run, a facade over the capture engine.

    hook = tt.Hook("runs/exp1", include_collections=["weights", "gradients", "losses"],
                   save_config=tt.SaveConfig(save_interval=10))
    hook.register(model)

The Hook checks its configuration, finds the framework's adapter through the plugins, and wires
three parts together: the `CaptureSession` its adapters capture through (`tt.Capture`: steps,
selection, the step buffer; tensortap.capture), the run's output (folder, worker claim, writer;
tensortap.output) and the live rules. One training iteration is one step, counted from 0
globally and per mode; on steps no collection saves, an adapter does nothing but count.
Failures inside tensortap are reported (`hook.errors`) and training goes on.
"""
from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Union

from .adapter import Adapter, AdapterSpec
from .capture.interface import CaptureItem, ModeArg
from .capture.selection import CollectionArg, Selection, resolve_collections
from .capture.selection import user_collection as user_collection  # noqa: F401 - compat.smdebug uses it
from .capture.session import CaptureSession
from .closing import DEFAULT_CLOSE_TIMEOUT, check_close_timeout, record_abandoned, wait_written
from .collections import CATEGORIES, Collection
from .errors import ConfigError, did_you_mean
from .layers import LayerInfo
from .modes import ModeKeys
from .output import RunOutput
from .output import env_rank as _env_rank  # noqa: F401 - compat.smdebug uses it
from .plugins import get_registry
from .reductions import ReductionConfig
from .save_config import SaveConfig
from .store.fs import make_run_dir, resolve

if TYPE_CHECKING:  # pragma: no cover
    from .store import StoreWriter, WriterStats

log = logging.getLogger("tensortap")


def _close_at_exit(ref: "weakref.ref[Hook]") -> None:
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

    `dry_run=True` makes a hook that writes nothing and claims nothing: out_dir is neither created
    nor claimed (a real run may use it), `register` leaves the model bare, saves and rules are
    ignored, and `close` has nothing to do. For a process that must not write: smdebug's dry_run,
    or a rank other than 0 when only rank 0 writes.
    """

    def __init__(
        self,
        out_dir: Any,
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
        dry_run: bool = False,
    ) -> None:
        if out_dir is None or (isinstance(out_dir, str) and not out_dir.strip()):
            raise ConfigError("out_dir is required: pass a directory (or an fsspec URL such as s3://bucket/run)")
        self.out_dir: str = os.fspath(out_dir)
        self.close_timeout = check_close_timeout(close_timeout)
        #: True: this hook writes and claims nothing (see the class docstring)
        self.dry_run = bool(dry_run)
        if not self.dry_run:
            make_run_dir(*resolve(self.out_dir), shown=self.out_dir)  # a bad out_dir is an error now, not at register()
        if save_config is None:
            save_config = SaveConfig()
        if not isinstance(save_config, SaveConfig):
            raise ConfigError(f"save_config must be a tt.SaveConfig, got {type(save_config).__name__}")
        if reduction_config is not None and not isinstance(reduction_config, ReductionConfig):
            raise ConfigError(f"reduction_config must be a tt.ReductionConfig, got {type(reduction_config).__name__}")
        self.registry = get_registry()
        if framework is not None:
            self.registry.get("adapters", framework)  # clear error for an unknown framework
        self.framework = framework
        known = dict(self.registry.collections)
        self.collections: List[Collection] = resolve_collections(include_collections, include_regex, save_all, known)
        selection = Selection(self.collections, save_config, reduction_config, CATEGORIES + tuple(known))
        writer_options: Dict[str, Any] = {"on_full": on_full, "flush_seconds": flush_seconds}
        if queue_bytes is not None:
            writer_options["queue_bytes"] = int(queue_bytes)
        #: what close() gave up waiting for (live rules, callbacks, webhooks), by name
        self.abandoned: List[str] = []
        # Claim this worker of the run now, not at the first write: a second writer is refused here.
        self._output = RunOutput(self, rank, self.registry, writer_options, claim=not self.dry_run)
        #: the `tt.Capture` this hook's adapters capture through (tensortap.capture)
        self.session = CaptureSession(selection, self.registry, self._output.reporter, self._output.step_done,
                                      self._output.record)
        if self.dry_run:
            self.session.close()  # captures and saves are dropped from the start
        for c in self.collections:
            c.on_change(self._collection_changed)
        atexit.register(_close_at_exit, weakref.ref(self))

    # ---- configuration -----------------------------------------------------------------------
    @property
    def save_config(self) -> SaveConfig:
        """The hook's SaveConfig (a collection's own save_config takes precedence for it)."""
        return self.session.selection.save_config

    @property
    def reduction_config(self) -> Optional[ReductionConfig]:
        """The hook's ReductionConfig (None: whole tensors), for collections without their own."""
        return self.session.selection.reduction_config

    def _collection_changed(self) -> None:
        """A collection of the hook changed (include(), add_tensor_name(), changed())."""
        self.session.collections_changed()

    def get_collection(self, name: str) -> Collection:
        """One of the hook's collections, e.g. to fill a user collection:
        `hook.get_collection("relu_activations").include("relu.*")`."""
        for c in self.collections:
            if c.name == name:
                return c
        raise ConfigError(f"collection {name!r} is not included in this hook." +
                          did_you_mean(name, [c.name for c in self.collections])
                          + f" Include it when making the hook: tt.Hook(..., include_collections=[..., {name!r}])")

    # ---- the framework's adapter ---------------------------------------------------------------
    @property
    def adapter(self) -> Optional[Adapter]:
        """The framework adapter attached by register() (None before)."""
        return self.session.adapter

    def register(self, model: Any) -> "Hook":
        """Attach to a model; its framework is detected through the installed plugins (a dry_run
        hook attaches nothing)."""
        if self.dry_run:
            return self
        spec = self._spec_for(model)
        with self.session.lock:
            cls = spec.load()
            old = self.adapter
            if not (type(old) is cls and old is not None and old.model is None):  # else: made by register_loss first
                if old is not None:
                    old.detach()
                self.session.set_adapter(cls(self.session))
            adapter = self.adapter
            assert adapter is not None
            adapter.model = model
            writer = self._output.open()
            adapter.attach(model)
            writer.update_meta(framework=spec.name)
        return self

    def _spec_for(self, model: Any) -> AdapterSpec:
        reg = self.registry
        if self.framework is not None:
            spec: AdapterSpec = reg.get("adapters", self.framework)
            if not spec.recognises(model):
                raise ConfigError(
                    f"framework={self.framework!r} but the model is a {type(model).__module__}.{type(model).__name__}; "
                    "pass the matching framework or framework=None to detect it"
                )
            return spec
        found = reg.adapter_for(model)
        if found is None:
            installed = ", ".join(sorted(reg.adapters)) or "none"
            raise ConfigError(
                f"no installed tensortap plugin recognises a model of type "
                f"{type(model).__module__}.{type(model).__qualname__}. Installed framework plugins: {installed}. "
                "Install the plugin for your framework, e.g. `pip install tensortap-torch` "
                "(tensortap-tensorflow, tensortap-mxnet); `tensortap plugins` shows what loaded"
            )
        return found

    def extra(self, name: str) -> Any:
        """A framework extra: the adapter method `name` that a framework plugin offers users (its
        AdapterSpec.extras), bound to this hook's adapter, made now if the hook has none yet:
        `hook.extra("keras_callback")()` is `hook.keras_callback()` (tensortap-tensorflow)."""
        adapter = self.adapter
        spec = self.registry.adapters.get(adapter.name) if adapter is not None else None
        if spec is None or name not in spec.extras:
            offering = [s for s in self.registry.adapters.values() if name in s.extras]
            if len(offering) != 1:
                which = ", ".join(s.name for s in offering) or "none of the installed framework plugins"
                raise ConfigError(f"hook.extra({name!r}): offered by {which}; install the framework plugin that "
                                  "provides it (`tensortap plugins` shows what loaded), or register its model first")
            spec = offering[0]
            with self.session.lock:
                self.session.set_adapter(spec.load()(self.session))
                if not self.dry_run:  # a dry_run hook's adapter captures nothing: its session is closed
                    self._output.open().update_meta(framework=spec.name)
            adapter = self.adapter
        return getattr(adapter, name)

    def keras_callback(self) -> Any:
        """A Keras callback that captures through this hook (tensortap-tensorflow)."""
        return self.extra("keras_callback")()

    def wrap_tape(self, tape: Any) -> Any:
        """Wrap a tf.GradientTape so gradients and the loss are recorded (tensortap-tensorflow)."""
        return self.extra("wrap_tape")(tape)

    # ---- steps (adapters begin them; drivers and manual loops may too) --------------------------
    @property
    def step(self) -> int:
        """The global step (counted from 0 across modes; -1 before the first)."""
        return self.session.step

    @property
    def mode(self) -> ModeKeys:
        """The mode of the current step."""
        return self.session.mode

    @property
    def mode_step(self) -> int:
        """The current step's number within its mode."""
        return self.session.mode_step

    @property
    def saving(self) -> bool:
        """True when some collection saves the current step."""
        return self.session.saving

    def set_mode(self, mode: ModeArg) -> None:
        """Fix the mode (tt.modes.TRAIN / EVAL / PREDICT); None returns to the framework's own mode."""
        self.session.set_mode(mode)

    def begin_step(self, mode: ModeArg = None, *, step: Optional[int] = None) -> None:
        """Start the next step (adapters call this once per training iteration; a driver, see
        `drive_steps`, for the modes it drives).

        `step` numbers the step within its mode, e.g. a trainer's global_step: numbers must grow
        (a smaller one is reported and the next free number used, so nothing saved is overwritten),
        and the current step's number again continues that step (another forward/backward pass of
        gradient accumulation) instead of starting one. The global step stays the hook's own count
        of all steps, unique and increasing across modes, but at least `step`: a run of one mode
        keeps the caller's numbers as its global steps too."""
        self.session.begin_step(mode, step=step)

    def end_step(self) -> None:
        """Hand the current step to the writer now instead of at the next begin_step. While steps
        are driven (drive_steps), nothing more is captured until the next begin_step."""
        self.session.end_step()

    def drive_steps(self, modes: Optional[Iterable[Union[ModeKeys, str]]] = None) -> None:
        """Steps of `modes` (default: TRAIN, EVAL and PREDICT) begin only when you call
        `begin_step(mode, step=...)`: the adapter no longer starts them itself (torch: at each forward
        of the model). For trainer integrations and loops that know their steps (an optimizer step).
        While driving: call `capture_gradients()` just before the optimizer step (the gradients the
        optimizer applies), `take_stop_request()` at step boundaries (begin_step no longer raises
        tt.StopTraining), and `end_step()` leaves the hook between steps (nothing captured until the
        next begin_step). `drive_steps([])` hands steps back to the adapter."""
        self.session.drive_steps(modes)

    def is_driven(self, mode: ModeArg = None) -> bool:
        """Does a driver begin the steps of `mode` (after set_mode's override)? Adapters ask this at a
        would-be step boundary and start a step themselves only when it is False."""
        return self.session.is_driven(mode)

    def capture_gradients(self) -> int:
        """Capture the parameters' gradients as they are now, into the current step; returns how many
        were kept (0 when the step saves none). A driver calls it after the step's last backward pass,
        just before the optimizer step: with gradient accumulation, clipping or DDP's all-reduce, what
        is saved is what the optimizer applies."""
        return self.session.capture_gradients()

    def take_stop_request(self) -> Optional[str]:
        """The reason training was asked to stop (a rule's stop_training action, request_stop), or None;
        taking it clears it. Drivers call this at step boundaries and stop their trainer their own way."""
        return self.session.take_stop_request()

    def request_stop(self, reason: str) -> None:
        """Ask training to stop at the next step boundary (what the stop_training action calls);
        while a stop is pending, the first request's reason is kept."""
        self.session.request_stop(reason)

    # ---- capture (what adapters do through hook.session; open to manual loops) ----------------
    def wants(self, category: str) -> bool:
        """Should tensors of `category` be captured at the current step? (cheap)"""
        return self.session.wants(category)

    def capture(self, name: str, tensor: Any, category: str, extra_collections: Sequence[str] = ()) -> bool:
        """Store `tensor` under `name` if an active collection includes it; True if it was kept.
        Errors are reported and swallowed so training goes on."""
        return self.session.capture(name, tensor, category, extra_collections)

    def capture_many(self, items: Iterable[CaptureItem]) -> int:
        """`capture` for several (name, tensor, category) at once; returns how many were kept."""
        return self.session.capture_many(items)

    def needs_gradient(self, name: str) -> bool:
        """Does a reduction of `name`, captured this step, wait for its gradient?"""
        return self.session.needs_gradient(name)

    def set_tokens(self, tokens: Any) -> None:
        """Token strings of the batch about to run: one list per sequence (or one list for all of
        them). Saved as attention/tokens beside the attention of this and every later step that saves
        attention, until replaced; None clears them. The attention head view labels its rows with them."""
        self.session.set_tokens(tokens)

    def describe_layers(self, layers: Iterable[LayerInfo]) -> None:
        """Record what each layer is (class, kind: tensortap.layers.LayerInfo) in the run, once per
        layer; rules find layers by kind through it (trial.layer_kind)."""
        self.session.describe_layers(layers)

    @property
    def layers(self) -> Dict[str, LayerInfo]:
        """layer name -> LayerInfo of every layer described so far (describe_layers)."""
        return dict(self.session.layers)

    # ---- user-facing saves -------------------------------------------------------------------
    def record_loss(self, loss: Any, name: str = "loss") -> None:
        """Record a loss value (a framework scalar tensor or a number) in collection "losses"."""
        self.session.record_loss(loss, name)

    def register_loss(self, loss_obj: Any, name: str = "loss") -> None:
        """Record the output of a loss module/block every time it is called."""
        if self.dry_run:
            return
        adapter = self.adapter
        if adapter is None:
            spec = self._spec_for(loss_obj)
            self.session.set_adapter(spec.load()(self.session))
            self._output.open()
            adapter = self.adapter
            assert adapter is not None
        adapter.register_loss(loss_obj, name)

    def save_scalar(self, name: str, value: Any, *, collection: str = "scalars") -> None:
        """Save a number (accuracy, learning rate, ...) in `collection` ("scalars"; trainer
        integrations pass "losses" / "metrics" for what the trainer logs), at the current step,
        every time it is called: scalars are cheap and often once-per-epoch, so they do not follow
        the hook's save_interval (give that collection its own save_config to thin them)."""
        own = next((c for c in self.collections if c.name == collection and c.save_config is not None), None)
        self.session.save(name, value, collection, always=own is None)

    def save_tensor(self, name: str, value: Any, collections: Union[str, Sequence[str]] = ("default",)) -> None:
        """Save any array under `name` at the current step, tagged with `collections`.

        It is written when one of the hook's collections includes it at this step, or, for
        collection names the hook does not include, on every step the hook saves anything."""
        if isinstance(collections, str):
            collections = [collections]
        collections = list(collections) or ["default"]
        self.session.save(name, value, collections[0], tuple(collections[1:]))

    # ---- rules -------------------------------------------------------------------------------
    def add_rule(self, rule: Any, action: Any = None) -> None:
        """Evaluate `rule` on every saved step, off the training thread; run `action` when it fires
        ("stop_training", "log", an Action, a callable, or a list of these)."""
        from .rules.live import LiveRules
        from .rules.requirements import NeedsCheck

        if self.dry_run:
            return
        out = self._output
        with self.session.lock:
            if out.rules is None:
                out.rules = LiveRules(self)
            out.rules.add(rule, action)
            if out.needs is None:
                out.needs = NeedsCheck(self)
        out.needs.added(rule)

    # ---- errors and the run --------------------------------------------------------------------
    def report_error(self, what: str, exc: BaseException) -> None:
        """Report a failure inside tensortap (logged once per kind, counted, recorded in the run);
        training goes on."""
        self.session.report_error(what, exc)

    _report = report_error  # the live rules' name for it (tensortap.rules)

    def _report_event(self, event: str, detail: str) -> None:
        self.session.reporter.event(event, detail)

    @property
    def errors(self) -> List[str]:
        """The failures reported so far (at most 1000 kept), each "what: Type: message"."""
        return self.session.reporter.errors

    @property
    def _closed(self) -> bool:  # the live rules read it (tensortap.rules)
        return self.session.closed

    @property
    def _rules(self) -> Any:  # the live rules (rules.live.LiveRules) of this hook, None before add_rule
        return self._output.rules

    @property
    def writer(self) -> Optional["StoreWriter"]:
        """The run's store writer (None until the first write or register)."""
        return self._output.writer

    @property
    def stats(self) -> Optional["WriterStats"]:
        """Writer statistics: steps/tensors/bytes written, steps dropped, write errors."""
        return self.writer.stats if self.writer is not None else None

    # ---- closing -----------------------------------------------------------------------------
    def flush(self, timeout: Optional[float] = None) -> bool:
        """Hand over the current step and wait until everything is on disk (readable by a trial)."""
        self.session.hand_over()
        return self.writer.flush(timeout) if self.writer is not None else True

    def close(self, timeout: Optional[float] = None) -> None:
        """Write everything, record the live rule results, and close the run. Safe to call twice.

        Live rules, callbacks and webhooks get `timeout` seconds (default: the hook's
        close_timeout, 10 s) to finish; what they have not finished then is abandoned, named in a
        warning, in `hook.abandoned` and in a `close_abandoned` event of the run. Writing the
        captured data is not cut short (nor counted in that time): every step is written first."""
        if self.session.closed:
            if self.dry_run and self.adapter is not None:  # made by an extra (keras_callback): undo its wrapping
                adapter = self.adapter
                self.session.set_adapter(None)
                self._detach(adapter)
            return
        limit = self.close_timeout if timeout is None else check_close_timeout(timeout)
        out = self._output
        with self.session.lock:
            self.session.hand_over()
            self.session.close()
        if out.writer is not None:  # live rules read the last steps back: readable first
            wait_written(out.writer, self.out_dir, readable=out.rules is not None)
        if out.rules is not None:
            self.abandoned = out.rules.close(limit)
        if self.adapter is not None:
            self._detach(self.adapter)
        try:
            writer = out.open()
        except ConfigError as e:  # register() already failed on this; closing must not raise again
            log.warning("tensortap: %s closed without a run: %s", self.out_dir, e)
            if out.claim is not None:
                out.claim.release(remove=True)
            return
        record_abandoned(self, self.abandoned, limit)
        wait_written(writer, self.out_dir, readable=False)  # close() below makes it readable
        writer.close()
        self.registry.call_behaviour("tensortap_run_closed", hook=self, out_dir=self.out_dir)

    def _detach(self, adapter: Adapter) -> None:
        try:
            adapter.detach()
        except Exception as e:  # noqa: BLE001
            self.report_error("could not detach", e)

    def disown(self) -> None:
        """Stop capturing in this process without writing or closing anything: for a forked child
        (a DataLoader worker) that inherited the hook of the process whose run it is."""
        self.session.close()

    def __enter__(self) -> "Hook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        framework = self.adapter.name if self.adapter else self.framework
        return f"<Hook out_dir={self.out_dir!r} framework={framework} step={self.step}>"
