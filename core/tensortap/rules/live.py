"""Live rule evaluation: each step the hook saves is checked by the attached rules once it is on
disk, off the training thread, and their actions take effect at the next step boundary.

Where rules run (environment variable TENSORTAP_LIVE_RULES):
- "process" (default): a second Python process tails the run and evaluates the rules; results
  come back over a pipe and the hook records them and runs the actions. Rule evaluation holds no
  GIL of the training process. Rules must be picklable and importable by module name (a class in
  `__main__` or a local class is not): such a rule runs on the thread instead, with a warning.
- "thread": a thread in the training process (what a rule that cannot be pickled uses).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..errors import ConfigError
from .actions import Action, ActionContext, Callback
from .base import Rule, RuleResult, results_record

log = logging.getLogger("tensortap")

#: environment variable choosing where live rules run: "process" (default) or "thread"
WHERE_ENV = "TENSORTAP_LIVE_RULES"
#: live rules look this many saved steps back at most (unchanged_tensor: 2); older cached values are dropped
LOOK_BACK = 4


class Activity:
    """What a rules thread is busy with now: close() names it when it has to abandon it."""

    __slots__ = ("what", "since")

    def __init__(self) -> None:
        self.what: Optional[str] = None
        self.since = 0.0

    def start(self, what: str) -> None:
        self.since, self.what = time.monotonic(), what

    def stop(self) -> None:
        self.what = None

    def describe(self) -> Optional[str]:
        """"rule 'x' at step 3 (running for 9.8 s)", or None when idle."""
        what, since = self.what, self.since
        return None if what is None else f"{what} (running for {time.monotonic() - since:.1f} s)"


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


class Evaluator:
    """Reads a run through a value cache and evaluates rules at saved steps, in order, each once;
    the same code runs in the rules process and on the rules thread."""

    def __init__(self, out_dir, report: Callable[[str, BaseException], None]) -> None:
        self.out_dir = out_dir
        self.report = report
        self.rules: Dict[Any, Rule] = {}
        self._trial = None
        self._recent: Deque[int] = deque(maxlen=LOOK_BACK + 1)  # the latest steps evaluated
        self.activity = Activity()  # the rule being evaluated (named if close() abandons it)

    def open(self) -> bool:
        """Open the run, or pick up what was written since; False (reported) if it cannot be read."""
        try:
            if self._trial is None:
                from ..trial import Trial
                from .cache import CachedTrial

                self._trial = CachedTrial(Trial(self.out_dir))
            else:
                self._trial.refresh()
            return True
        except Exception as e:  # noqa: BLE001
            self.report("live rules could not read the run", e)
            return False

    def at_step(self, step: int) -> List[Tuple[Any, RuleResult]]:
        """Every rule's result at `step` (call open() first); a failing rule is reported and skipped."""
        out = []
        if self._recent:  # what the rules read at the previous saved step, in one go
            try:
                self._trial.prefetch(step, self._trial.wanted(self._recent[-1]))
            except Exception as e:  # noqa: BLE001 - the rules read one by one and say what is wrong
                self.report(f"live rules could not read step {step} ahead", e)
        act = self.activity
        for key, rule in list(self.rules.items()):
            act.start(f"rule {rule.name!r} at step {step}")
            try:
                out.append((key, rule.invoke(self._trial, step)))
            except Exception as e:  # noqa: BLE001
                self.report(f"rule {rule.name} failed at step {step}", e)
            finally:
                act.stop()
        self._recent.append(step)
        self._trial.evict(before=self._recent[0])  # saved steps, not step numbers: save_interval=10 too
        return out

    def idle_timeout(self) -> Optional[float]:
        """Seconds to wait for the next step before the idle checks (None: no rule has one)."""
        iv = [r.idle_interval for r in list(self.rules.values()) if r.idle_interval is not None]
        return min(iv) if iv else None

    def idle(self) -> List[Tuple[Any, RuleResult]]:
        """No step arrived for a while: give rules with an idle check (stalled_training) a look."""
        if not any(r.idle_interval is not None for r in self.rules.values()) or not self.open():
            return []
        now, out = time.time(), []
        for key, rule in list(self.rules.items()):
            if rule.idle_interval is None:
                continue
            self.activity.start(f"rule {rule.name!r} (idle check)")
            try:
                res = rule.invoke_idle(self._trial, now)
            except Exception as e:  # noqa: BLE001
                self.report(f"rule {rule.name} failed while idle", e)
                continue
            finally:
                self.activity.stop()
            if res is not None:
                out.append((key, res))
        return out

    @property
    def trial(self):
        return self._trial


def apply_results(hook, items: List[Tuple[Rule, List[Action], RuleResult]], trial=None,
                  record: Optional[dict] = None, activity: Optional[Activity] = None) -> None:
    """Record results in the run, all in ONE index record (`record`, made by results_record in
    the rules process, or made here), then run the actions of those that fired (failures are
    reported; `activity` says which action runs, for close() to name one that hangs)."""
    if not items:
        return
    if hook.writer is not None:
        hook.writer.submit_record(record if record is not None else results_record([res for _, _, res in items]))
    act = activity or Activity()
    for rule, actions, res in items:
        if res.fired:
            for a in actions:
                act.start(f"action {a.describe()} for rule {rule.name!r} at step {res.step}")
                try:
                    a.run(ActionContext(rule, res, hook, trial))
                except Exception as e:  # noqa: BLE001
                    hook._report(f"action {a.name} for rule {rule.name} failed", e)
                finally:
                    act.stop()


def close_actions(rules: List[Tuple[Rule, List[Action]]], deadline: Optional[float]) -> List[str]:
    """Let each distinct action finish its pending work (webhook sends) until `deadline`
    (time.monotonic(); None: no limit); what is still pending then is abandoned and named."""
    seen: Dict[int, Action] = {}
    for _, actions in rules:
        for a in actions:
            seen.setdefault(id(a), a)
    abandoned: List[str] = []
    for a in seen.values():
        try:
            abandoned += a.close(deadline)
        except Exception as e:  # noqa: BLE001 - an action's close must not stop the run's
            abandoned.append(f"action {a.describe()} (its close failed: {type(e).__name__}: {e})")
    return abandoned


class ThreadRules:
    """Rules evaluated on a thread of the training process (GIL shared with training)."""

    def __init__(self, hook) -> None:
        self.hook = hook
        self.rules: List[Tuple[Rule, List[Action]]] = []
        self._eval = Evaluator(hook.out_dir, hook._report)
        self._q: "queue.Queue[Optional[int]]" = queue.Queue()
        self._acting = Activity()  # the action running now
        self._abandoned = False  # close() gave up on this thread: it records and acts no more
        self._thread = threading.Thread(target=self._run, name="tensortap-rules", daemon=True)
        self._thread.start()

    def add(self, rule: Rule, actions: List[Action]) -> None:
        self._eval.rules[len(self.rules)] = rule
        self.rules.append((rule, actions))

    def step_saved(self, step: int) -> None:
        self._q.put(step)

    def begin_close(self) -> None:
        """No more steps: evaluate those queued, then end."""
        self._q.put(None)

    def finish(self, deadline: Optional[float]) -> List[str]:
        """Wait for the thread until `deadline` (time.monotonic(); None: no limit). A thread still
        busy then is abandoned (a daemon: it cannot be killed, but records and acts no more);
        returns what it was doing, by name."""
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return []
        self._abandoned = True
        doing = self._eval.activity.describe() or self._acting.describe() or "reading the run"
        left = self._q.qsize() - 1  # the None that ends it is queued too
        more = f"; {left} more saved step(s) not evaluated" if left > 0 else ""
        return [f"rules thread: {doing}{more}"]

    def close(self, timeout: Optional[float] = None) -> List[str]:
        self.begin_close()
        return self.finish(None if timeout is None else time.monotonic() + timeout)

    def _open(self) -> bool:
        try:
            self.hook.writer.flush()
        except Exception as e:  # noqa: BLE001
            self.hook._report("live rules could not read the run", e)
            return False
        return self._eval.open()

    def _run(self) -> None:
        while True:
            try:
                step = self._q.get(timeout=self._eval.idle_timeout())
            except queue.Empty:
                if self.hook.writer is not None and not self.hook._closed and self._open():
                    self._apply(self._eval.idle())
                continue
            if step is None or self._abandoned:
                return
            if self._open():
                self._apply(self._eval.at_step(step))

    def _apply(self, results) -> None:
        if self._abandoned:  # close() gave up on a hung rule: its late results are not the run's
            return
        apply_results(self.hook, [(*self.rules[key], res) for key, res in results], self._eval.trial,
                      activity=self._acting)


class LiveRules:
    """What Hook.add_rule feeds: sends each rule to the rules process (default) or, when that is
    not possible (or TENSORTAP_LIVE_RULES=thread), to the rules thread."""

    def __init__(self, hook) -> None:
        self.hook = hook
        where = os.environ.get(WHERE_ENV, "process").strip().lower() or "process"
        if where not in ("process", "thread"):
            raise ConfigError(f'{WHERE_ENV}={where!r}: use "process" (the default) or "thread"')
        self.where = where
        self._proc = None
        self._thread: Optional[ThreadRules] = None
        self._proc_failed = False

    @property
    def rules(self) -> List[Tuple[Rule, List[Action]]]:
        """Every (rule, actions) attached, wherever it runs."""
        return [x for b in (self._proc, self._thread) if b is not None for x in b.rules]

    def add(self, rule: Rule, action) -> None:
        if not isinstance(rule, Rule):
            raise ConfigError(f"add_rule needs a Rule instance, got {rule!r} (e.g. tt.rules.get('vanishing_gradient')())")
        actions = make_actions(action)
        have = {a.name for a in actions}
        actions += [a for n in rule.implied_actions() if n not in have for a in make_actions(n)]
        if self.where == "process" and not self._proc_failed:
            from .process import RuleNotPortable, RulesProcess

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
    def process_stats(self) -> Dict[str, Any]:
        """What the rules process reported when it closed (RulesProcess.stats; {} if none)."""
        return dict(self._proc.stats) if self._proc is not None else {}

    def step_saved(self, step: int) -> None:
        if self._proc is not None:
            self._proc.step_saved(step)
        if self._thread is not None:
            self._thread.step_saved(step)

    def close(self, timeout: Optional[float] = None) -> List[str]:
        """Let the rules evaluate the steps still pending and their actions finish, together,
        for at most `timeout` seconds (None: no limit); returns what was abandoned, by name."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backends = [b for b in (self._proc, self._thread) if b is not None]
        for b in backends:
            b.begin_close()
        abandoned: List[str] = []
        for b in backends:
            abandoned += b.finish(deadline)
        return abandoned + close_actions(self.rules, deadline)
