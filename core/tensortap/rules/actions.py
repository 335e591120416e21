"""Actions: what happens when a rule fires (stop training, log, call back, post a webhook, write
status.json), and make_actions, which turns what add_rule was given into them. The built-ins are
registered as a plugin."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..plugins import get_registry
from .outcomes import step_label

if TYPE_CHECKING:  # pragma: no cover
    from .sending import SendPool

log = logging.getLogger("tensortap")


@dataclass
class ActionContext:
    """Passed to Action.run: the rule, its result, and the live hook (None offline)."""

    rule: Any
    result: Any
    hook: Any = None
    trial: Any = None


class Action:
    """Base class of actions; subclasses set `name` and implement `run(ctx)`."""

    name: str = "action"

    def run(self, ctx: ActionContext) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """The action in a line (what close() names if it has to abandon it); never a secret."""
        return self.name

    def close(self, deadline: float | None) -> list[str]:
        """The run is closing: finish work still pending (sends in flight) until `deadline`
        (time.monotonic(); None: no limit), abandon the rest and return what it was, by name."""
        return []

    def __repr__(self) -> str:
        return f"<Action {self.name}>"


def fired_at(ctx: ActionContext) -> str:
    """"rule loss_not_decreasing fired at step 26 (eval step 2)": the step named as everywhere else."""
    return f"rule {ctx.result.rule} fired at {step_label(ctx.trial, ctx.result.step)}"


class StopTrainingAction(Action):
    """Stop training at the next step boundary (torch: raises tt.StopTraining from the hook;
    Keras: sets model.stop_training; Gluon: raises tt.StopTraining). Registered as "stop_training"."""

    name = "stop_training"

    def run(self, ctx: ActionContext) -> None:
        if ctx.hook is None:
            log.warning("tensortap: rule %s asked to stop training, but it runs offline", ctx.result.rule)
            return
        # while a stop is pending, request_stop keeps the first firing's reason (the one training sees)
        ctx.hook.request_stop(f"{fired_at(ctx)}: {ctx.result.message}")


class Log(Action):
    """Log the firing at WARNING level on the "tensortap" logger."""

    name = "log"

    def run(self, ctx: ActionContext) -> None:
        log.warning("tensortap: %s: %s", fired_at(ctx), ctx.result.message)


class Callback(Action):
    """Call any Python callable with the RuleResult (and the hook, if it takes two arguments)."""

    name = "callback"

    def __init__(self, fn: Callable) -> None:
        if not callable(fn):
            raise ConfigError(f"callback action needs a callable, got {fn!r}")
        self.fn = fn
        self.with_hook = _takes_two(fn)

    def run(self, ctx: ActionContext) -> None:
        if self.with_hook:
            self.fn(ctx.result, ctx.hook)
        else:
            self.fn(ctx.result)

    def describe(self) -> str:
        return f"callback {getattr(self.fn, '__qualname__', None) or type(self.fn).__name__}"


def make_actions(action: Any) -> list[Action]:
    """Normalise an action argument: None, a registered name, an Action, a callable, or a list of these."""
    if action is None:
        return []
    if isinstance(action, (list, tuple)):
        return [a for x in action for a in make_actions(x)]
    if isinstance(action, Action):
        return [action]
    if isinstance(action, str):
        cls = get_registry().get("actions", action)
        try:
            return [cls()]
        except TypeError as e:
            raise ConfigError(f"action {action!r} needs parameters ({e}); pass an instance, e.g. "
                              f"tt.rules.get_action({action!r})(...)") from None
    if callable(action):
        return [Callback(action)]
    raise ConfigError(f"unknown action {action!r}: use a name from tt.rules.list_actions(), an Action, or a callable")


def _takes_two(fn: Callable) -> bool:
    """Does `fn` accept two positional arguments (result, hook)?"""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 2


class Webhook(Action):
    """POST the result as JSON to `url`, off the thread that evaluates rules: up to `workers`
    sends at once, each given `timeout` seconds; at most `max_pending` wait (more are dropped and
    reported). `once=True` sends only the first firing of each rule; `cooldown=s` sends a rule's
    firing only if its last send was at least `s` seconds ago. Firings not sent are counted:
    the next send of that rule carries the count in "suppressed". hook.close() waits for sends
    in flight until its time limit (close_timeout) and names those it abandons."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 5.0, headers: dict | None = None, *, once: bool = False,
                 cooldown: float = 0.0, workers: int = 4, max_pending: int = 256) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must start with http:// or https://, got {url!r}")
        for k, v, lo in (("timeout", timeout, 0.0), ("cooldown", cooldown, 0.0)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= lo:
                raise ConfigError(f"webhook {k} must be a number of seconds >= {lo:g}, got {v!r}")
        for k, n in (("workers", workers), ("max_pending", max_pending)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"webhook {k} must be a whole number >= 1, got {n!r}")
        self.url, self.timeout, self.headers = url, float(timeout), dict(headers or {})
        self.once, self.cooldown = bool(once), float(cooldown)
        self.workers, self.max_pending = workers, max_pending
        parts = urllib.parse.urlsplit(url)  # host and port only: a webhook's path often holds its secret
        self.where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self._lock = threading.Lock()
        self._sent: dict[str, list[float]] = {}  # rule -> [time of its last send, firings not sent since]
        self._pool: SendPool | None = None

    def describe(self) -> str:
        return f"webhook to {self.where}"

    def run(self, ctx: ActionContext) -> None:
        rule = str(ctx.result.rule)
        now = time.monotonic()
        with self._lock:
            st = self._sent.get(rule)
            if st is not None and (self.once or now - st[0] < self.cooldown):
                st[1] += 1
                return
            suppressed = int(st[1]) if st is not None else 0
            self._sent[rule] = [now, 0]
        body = json.dumps({**ctx.result.to_record(), "out_dir": getattr(ctx.hook, "out_dir", None),
                           "suppressed": suppressed}).encode()
        if ctx.hook is None:  # offline (tt.invoke_rule): no run to close, send now
            self._post(body)
            return
        from .sending import SendPool

        hook = ctx.hook
        label = f"rule {rule!r} at step {ctx.result.step}"

        def send() -> None:
            try:
                self._post(body)
            except Exception as e:  # noqa: BLE001 - reported like any failing action
                hook._report(f"action {self.name} for rule {rule} failed", e)

        with self._lock:
            if self._pool is None:
                self._pool = SendPool("webhook", self.workers, self.max_pending)
            pool = self._pool
        if not pool.submit(label, send):
            hook._report(f"action {self.name} for rule {rule} failed", RuntimeError(
                f"{self.max_pending} sends to {self.where} already wait; this firing ({label}) was dropped "
                "(the endpoint is slow or down; once=True or cooldown=... send fewer)"))

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **self.headers})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read()

    def close(self, deadline: float | None) -> list[str]:
        with self._lock:
            pool, self._pool = self._pool, None  # a later run (another hook) gets a fresh pool
        left: list[str] = pool.close(deadline) if pool is not None else []
        if not left:
            return []
        shown = "; ".join(left[:3]) + (f"; ... ({len(left) - 3} more)" if len(left) > 3 else "")
        return [f"{self.describe()}: {len(left)} send(s) not completed ({shown})"]


class WriteStatus(Action):
    """Write status.json in the run directory: the last firing of each rule."""

    name = "write_status"

    def __init__(self, filename: str = "status.json") -> None:
        self.filename = os.path.basename(filename) or "status.json"

    def run(self, ctx: ActionContext) -> None:
        from ..store.fs import join, resolve

        out = getattr(ctx.hook, "out_dir", None) or getattr(ctx.trial, "path", None)
        if out is None:
            return
        fs, root = resolve(out)
        path = join(root, self.filename)
        try:
            status = json.loads(fs.cat_file(path))
        except Exception:  # noqa: BLE001
            status = {}
        status.setdefault("rules", {})[ctx.result.rule] = ctx.result.to_record()
        status["updated"] = time.time()
        fs.pipe_file(path, json.dumps(status, indent=1).encode())


@hookimpl
def tensortap_register_actions():
    return [StopTrainingAction, Log, Callback, Webhook, WriteStatus]
