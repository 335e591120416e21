"""Live rule evaluation: each step the hook saves is checked by the attached rules once it is on
disk, off the training thread, and their actions take effect at the next step boundary.

Where rules run (environment variable TENSORTAP_LIVE_RULES):
- "process" (default): a second Python process tails the run and evaluates the rules; results
  come back over a pipe and the hook records them and runs the actions (process.py, worker.py).
  Rule evaluation holds no GIL of the training process. Rules must be picklable and importable
  by module name (a class in `__main__` or a local class is not): such a rule runs on the
  thread instead, with a warning.
- "thread": a thread in the training process (thread.py; what a rule that cannot be pickled uses).
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

from ..errors import ConfigError
from .actions import make_actions
from .base import Rule
from .process import RuleNotPortable, RulesProcess
from .recording import Attached, close_actions
from .thread import ThreadRules

#: environment variable choosing where live rules run: "process" (default) or "thread"
WHERE_ENV = "TENSORTAP_LIVE_RULES"


class LiveRules:
    """What Hook.add_rule feeds: sends each rule to the rules process (default) or, when that is
    not possible (or TENSORTAP_LIVE_RULES=thread), to the rules thread."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        where = os.environ.get(WHERE_ENV, "process").strip().lower() or "process"
        if where not in ("process", "thread"):
            raise ConfigError(f'{WHERE_ENV}={where!r}: use "process" (the default) or "thread"')
        self.where = where
        self._proc: RulesProcess | None = None
        self._thread: ThreadRules | None = None
        self._proc_failed = False

    @property
    def rules(self) -> list[Attached]:
        """Every (rule, actions) attached, wherever it runs."""
        return [x for b in (self._proc, self._thread) if b is not None for x in b.rules]

    def add(self, rule: Rule, action: Any) -> None:
        if not isinstance(rule, Rule):
            raise ConfigError(f"add_rule needs a Rule instance, got {rule!r} "
                              "(e.g. tt.rules.get('vanishing_gradient')())")
        actions = make_actions(action)
        have = {a.name for a in actions}
        actions += [a for n in rule.implied_actions() if n not in have for a in make_actions(n)]
        if self.where == "process" and not self._proc_failed:
            try:
                if self._proc is None:
                    self._proc = RulesProcess(self.hook)
                self._proc.add(rule, actions)
                return
            except RuleNotPortable as e:
                warnings.warn(f"tensortap: {e}; evaluating it on a thread in the training process instead",
                              RuntimeWarning, stacklevel=3)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - no process: every rule runs on the thread
                self._proc_failed = True
                if self._proc is not None:
                    self._proc.close(5.0)
                    self._proc = None
                warnings.warn(f"tensortap: could not start the live rules process ({type(e).__name__}: {e}); "
                              "evaluating rules on a thread in the training process instead",
                              RuntimeWarning, stacklevel=3)
        if self._thread is None:
            self._thread = ThreadRules(self.hook)
        self._thread.add(rule, actions)

    @property
    def process_stats(self) -> dict[str, Any]:
        """What the rules process reported when it closed (RulesProcess.stats; {} if none)."""
        return dict(self._proc.stats) if self._proc is not None else {}

    def step_saved(self, step: int) -> None:
        if self._proc is not None:
            self._proc.step_saved(step)
        if self._thread is not None:
            self._thread.step_saved(step)

    def close(self, timeout: float | None = None) -> list[str]:
        """Let the rules evaluate the steps still pending and their actions finish, together,
        for at most `timeout` seconds (None: no limit); returns what was abandoned, by name."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backends = [b for b in (self._proc, self._thread) if b is not None]
        for b in backends:
            b.begin_close()
        abandoned: list[str] = []
        for b in backends:
            abandoned += b.finish(deadline)
        return abandoned + close_actions(self.rules, deadline)
