"""Live rule evaluation: a thread beside training that checks each saved step."""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, List, Optional, Tuple

from ..errors import ConfigError
from .actions import Action, ActionContext, Callback
from .base import Rule

log = logging.getLogger("tensortap")


def make_actions(action) -> List[Action]:
    """Normalise an action argument: None, a name, an Action, a callable, or a list of these."""
    from ..plugins import get_registry

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


class LiveRules:
    """Evaluates rules on each step the hook saved, after it is on disk, off the training thread.
    Actions run on this thread; stop_training takes effect at the hook's next step boundary."""

    def __init__(self, hook) -> None:
        self.hook = hook
        self.rules: List[Tuple[Rule, List[Action]]] = []
        self._q: "queue.Queue[Optional[int]]" = queue.Queue()
        self._trial = None
        self._thread = threading.Thread(target=self._run, name="tensortap-rules", daemon=True)
        self._thread.start()

    def add(self, rule: Rule, action) -> None:
        if not isinstance(rule, Rule):
            raise ConfigError(f"add_rule needs a Rule instance, got {rule!r} (e.g. tt.rules.get('vanishing_gradient')())")
        self.rules.append((rule, make_actions(action)))

    def step_saved(self, step: int) -> None:
        self._q.put(step)

    def close(self, timeout: Optional[float] = None) -> None:
        self._q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        from ..trial import Trial

        while True:
            step = self._q.get()
            if step is None:
                return
            try:
                self.hook.writer.flush()
                if self._trial is None:
                    self._trial = Trial(self.hook.out_dir)
                else:
                    self._trial.refresh()
            except Exception as e:  # noqa: BLE001
                self.hook._report("live rules could not read the run", e)
                continue
            for rule, actions in list(self.rules):
                try:
                    res = rule.invoke(self._trial, step)
                except Exception as e:  # noqa: BLE001
                    self.hook._report(f"rule {rule.name} failed at step {step}", e)
                    continue
                self.hook.writer.submit_record(res.to_record())
                if res.fired:
                    for a in actions:
                        try:
                            a.run(ActionContext(rule, res, self.hook, self._trial))
                        except Exception as e:  # noqa: BLE001
                            self.hook._report(f"action {a.name} for rule {rule.name} failed", e)
