"""Actions: what happens when a rule fires. Built-ins are registered as a plugin."""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..hookspecs import hookimpl

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

    def __repr__(self) -> str:
        return f"<Action {self.name}>"


class StopTraining(Action):
    """Stop training at the next step boundary (torch: raises tt.StopTraining from the hook;
    Keras: sets model.stop_training; Gluon: raises tt.StopTraining)."""

    name = "stop_training"

    def run(self, ctx: ActionContext) -> None:
        if ctx.hook is None:
            log.warning("tensortap: rule %s asked to stop training, but it runs offline", ctx.result.rule)
            return
        if getattr(ctx.hook, "_stop_reason", None) is not None:
            return  # a stop is already pending: the first firing's reason is the one training sees
        ctx.hook.request_stop(f"rule {ctx.result.rule} fired at step {ctx.result.step}: {ctx.result.message}")


class Log(Action):
    """Log the firing at WARNING level on the "tensortap" logger."""

    name = "log"

    def run(self, ctx: ActionContext) -> None:
        log.warning("tensortap: rule %s fired at step %s: %s", ctx.result.rule, ctx.result.step, ctx.result.message)


class Callback(Action):
    """Call any Python callable with the RuleResult (and the hook, if it takes two arguments)."""

    name = "callback"

    def __init__(self, fn: Callable) -> None:
        if not callable(fn):
            from ..errors import ConfigError

            raise ConfigError(f"callback action needs a callable, got {fn!r}")
        self.fn = fn
        self.with_hook = _takes_two(fn)

    def run(self, ctx: ActionContext) -> None:
        if self.with_hook:
            self.fn(ctx.result, ctx.hook)
        else:
            self.fn(ctx.result)


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
    """POST the result as JSON to `url` (timeout seconds)."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 5.0, headers: Optional[dict] = None) -> None:
        from ..errors import ConfigError

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must start with http:// or https://, got {url!r}")
        self.url, self.timeout, self.headers = url, float(timeout), dict(headers or {})

    def run(self, ctx: ActionContext) -> None:
        body = json.dumps({**ctx.result.to_record(), "out_dir": getattr(ctx.hook, "out_dir", None)}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **self.headers})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - user-given URL
            resp.read()


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
    return [StopTraining, Log, Callback, Webhook, WriteStatus]
