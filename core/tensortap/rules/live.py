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
        actions = make_actions(action)
        have = {a.name for a in actions}
        actions += [a for n in rule.implied_actions() if n not in have for a in make_actions(n)]
        self.rules.append((rule, actions))

    def step_saved(self, step: int) -> None:
        self._q.put(step)

    def close(self, timeout: Optional[float] = None) -> None:
        self._q.put(None)
        self._thread.join(timeout)

    def _idle_timeout(self) -> Optional[float]:
        iv = [r.idle_interval for r, _ in list(self.rules) if r.idle_interval is not None]
        return min(iv) if iv else None

    def _open(self) -> bool:
        try:
            self.hook.writer.flush()
            if self._trial is None:
                from ..trial import Trial
                from .cache import CachedTrial

                self._trial = CachedTrial(Trial(self.hook.out_dir))
            else:
                self._trial.refresh()
            return True
        except Exception as e:  # noqa: BLE001
            self.hook._report("live rules could not read the run", e)
            return False

    def _run(self) -> None:
        while True:
            try:
                step = self._q.get(timeout=self._idle_timeout())
            except queue.Empty:
                self._idle()
                continue
            if step is None:
                return
            if not self._open():
                continue
            for rule, actions in list(self.rules):
                try:
                    res = rule.invoke(self._trial, step)
                except Exception as e:  # noqa: BLE001
                    self.hook._report(f"rule {rule.name} failed at step {step}", e)
                    continue
                self._record(rule, actions, res)
            self._trial.evict(before=step - 4)  # rules look a few steps back (unchanged_tensor: 2)

    def _idle(self) -> None:
        """No step arrived for a while: give rules with an idle check (stalled_training) a look."""
        import time

        if self.hook.writer is None or self.hook._closed or not self._open():
            return
        now = time.time()
        for rule, actions in list(self.rules):
            if rule.idle_interval is None:
                continue
            try:
                res = rule.invoke_idle(self._trial, now)
            except Exception as e:  # noqa: BLE001
                self.hook._report(f"rule {rule.name} failed while idle", e)
                continue
            if res is not None:
                self._record(rule, actions, res)

    def _record(self, rule: Rule, actions: List[Action], res) -> None:
        self.hook.writer.submit_record(res.to_record())
        if res.fired:
            for a in actions:
                try:
                    a.run(ActionContext(rule, res, self.hook, self._trial))
                except Exception as e:  # noqa: BLE001
                    self.hook._report(f"action {a.name} for rule {rule.name} failed", e)
