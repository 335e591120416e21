"""The training process's side of the live rules process (worker.py is the other): starts it,
sends it the rules and the saved steps, records the results it sends back and runs their actions
(on a receiver thread; a stop request takes effect at the hook's next step boundary). Messages:
protocol.py. Training never waits on it: a rules process that dies or hangs is reported through
hook._report and closed with time-outs."""
from __future__ import annotations

import json
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError
from ..store.fs import run_location
from . import protocol
from .actions import Action
from .activity import Activity
from .base import Rule
from .recording import Attached, apply_results
from .worker import cpu_budget

if TYPE_CHECKING:
    from ..trial import Trial

_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
         "from tensortap.rules.worker import main; main(int(sys.argv[2]), int(sys.argv[3]))")


class RuleNotPortable(Exception):
    """The rule cannot be sent to the rules process (not picklable, or not importable there)."""


class RulesProcessError(Exception):
    """The rules process died, hung, or sent something unexpected."""


class _Gone:
    """What the receiver thread tells add() when the rules process is gone before it answered."""

    def __init__(self, why: str) -> None:
        self.why = why


class _LazyTrial:
    """The run as the training process reads it, opened only if an action looks at ctx.trial."""

    def __init__(self, out_dir: str) -> None:
        self._out_dir, self._stale = out_dir, True
        self._trial: Optional["Trial"] = None

    def __getattr__(self, name: str) -> Any:
        if self._trial is None:
            from ..trial import Trial

            self._trial, self._stale = Trial(self._out_dir), False
        elif self._stale:
            self._trial.refresh()
            self._stale = False
        return getattr(self._trial, name)


class RulesProcess:
    """One child Python process evaluating every portable rule of a hook."""

    #: seconds to wait for the child to start and to acknowledge each rule
    start_timeout: float = 60.0
    #: close() without a time limit: a child that sends nothing for this long is killed (it hangs
    #: or a rule never ends)
    stall_timeout: float = 120.0

    def __init__(self, hook: Any) -> None:
        if os.name != "posix":
            raise RulesProcessError("the rules process needs a POSIX system (pipes passed by descriptor)")
        try:
            cpu_budget()  # a wrong TENSORTAP_RULES_CPU is the user's to fix, now, not the child's to hide
        except ValueError as e:
            raise ConfigError(str(e)) from None
        from multiprocessing.connection import Connection

        self.hook = hook
        self._rules: dict[int, Attached] = {}  # by the key the child knows it by
        self._next = 0
        self._acks: queue.Queue[protocol.Added | _Gone] = queue.Queue()
        self._steps: queue.Queue[int | None] = queue.Queue()
        self._send_lock = threading.Lock()
        self._trial = _LazyTrial(hook.out_dir)
        self._done = self._dead = False
        self._acting = Activity()  # the action the receiver thread runs now
        self._child_busy = Activity()  # what the child said it is stuck on ("busy" message)
        self._sent: set[int] = set()  # saved steps sent to the child whose results have not come back
        #: what the child said when it closed: steps evaluated, CPU seconds in all ("cpu_s") and
        #: from the first step on ("cpu_steps_s": start-up and loading the rules aside)
        self.stats: dict[str, Any] = {}
        self._last_msg = time.monotonic()
        r_down, w_down = os.pipe()  # parent -> child
        r_up, w_up = os.pipe()  # child -> parent
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, json.dumps(sys.path), str(r_down), str(w_up)],
                                         pass_fds=(r_down, w_up), stdin=subprocess.DEVNULL, env=_child_env())
        except Exception:
            for fd in (r_down, w_down, r_up, w_up):
                os.close(fd)
            raise
        os.close(r_down)
        os.close(w_up)
        self._out = Connection(w_down, readable=False)
        self._in = Connection(r_up, writable=False)
        try:
            # absolute: the child finds the run even if training changes directory later
            self._send(protocol.Init(run_location(hook.out_dir)))
            try:
                protocol.check_version(protocol.expect(self._recv_within(self.start_timeout, "start"), protocol.Ready))
            except protocol.ProtocolError as e:
                raise RulesProcessError(f"the rules process could not start: {e}") from None
        except BaseException:
            self._kill()
            raise
        self._receiver = threading.Thread(target=self._receive, name="tensortap-rules-receiver", daemon=True)
        self._sender = threading.Thread(target=self._send_steps, name="tensortap-rules-sender", daemon=True)
        self._receiver.start()
        self._sender.start()

    # ---- the training thread's side ----------------------------------------------------------
    def add(self, rule: Rule, actions: list[Action]) -> None:
        """Send `rule` to the child and wait for it to load there (RuleNotPortable if it cannot)."""
        if type(rule).__module__ == "__main__":
            raise RuleNotPortable(
                f"rule {rule.name!r} ({type(rule).__qualname__}) is defined in __main__, which the rules process "
                "cannot import; define it in a module (or a plugin) to evaluate it in the rules process")
        try:
            blob = pickle.dumps(rule, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - pickle raises several types
            raise RuleNotPortable(
                f"rule {rule.name!r} ({type(rule).__qualname__}) cannot be pickled for the rules process "
                f"({type(e).__name__}: {e}); live rules must be picklable: keep their state in plain attributes "
                "(numbers, strings, lists, numpy arrays) and define the class at module level") from None
        if self._dead:
            raise RulesProcessError("the rules process is not running")
        key, self._next = self._next, self._next + 1
        self._rules[key] = (rule, actions)  # before the child can send a result for it
        try:
            self._send(protocol.AddRule(key, blob, list(sys.path)))
            try:
                ack = self._acks.get(timeout=self.start_timeout)
            except queue.Empty:
                raise RulesProcessError(f"the rules process did not load rule {rule.name!r} "
                                        f"within {self.start_timeout:.0f} s") from None
            if isinstance(ack, _Gone):
                raise RulesProcessError(ack.why)
            if ack.error is not None:
                raise RuleNotPortable(f"rule {rule.name!r} ({type(rule).__qualname__}) could not be loaded in the "
                                      f"rules process ({ack.error}); live rules must be importable by module name")
        except BaseException:
            del self._rules[key]
            raise

    @property
    def rules(self) -> list[Attached]:
        """The (rule, actions) pairs evaluated in the child."""
        return list(self._rules.values())

    def step_saved(self, step: int) -> None:
        """A step was handed to the writer: the sender thread passes it on once it is on disk."""
        if not self._dead:
            self._steps.put(step)

    def begin_close(self) -> None:
        """No more steps: the child evaluates those pending, sends its last results and ends."""
        self._steps.put(None)

    def finish(self, deadline: float | None) -> list[str]:
        """Wait for the child's last results (and their actions) until `deadline` (time.monotonic();
        None: no limit), or until it has sent nothing for stall_timeout s. A child
        still busy then is killed; returns what was abandoned, by name."""
        why = None
        while self._receiver.is_alive():
            now = time.monotonic()
            left = None if deadline is None else deadline - now
            self._receiver.join(0.1 if left is None else max(0.0, min(0.1, left)))
            if not self._receiver.is_alive():
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                why = "the close timeout ran out"
            elif now - self._last_msg > self.stall_timeout:
                why = f"it sent nothing for {self.stall_timeout:g} s"
            if why is not None:
                break
        abandoned = []
        if why is not None:
            abandoned.append(self._abandon(why))
            self._dead = True
            self._kill()
            self._receiver.join(0.2)
        self._sender.join(0.2 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
        self._kill(grace=5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic())))
        return abandoned

    def close(self, timeout: float | None = None) -> list[str]:
        """begin_close() and finish() within `timeout` seconds (None: no limit)."""
        self.begin_close()
        return self.finish(None if timeout is None else time.monotonic() + timeout)

    def _abandon(self, why: str) -> str:
        """What close() gives up on when the child is killed ({why}), by name."""
        acting = self._acting.describe()
        if acting is not None:  # the receiver thread is stuck in an action (a callback that never returns)
            doing = acting
        else:
            doing = self._child_busy.describe() or "evaluating"
        steps = sorted(self._sent.copy())  # (copy: atomic while the sender thread adds)
        pend = f"; saved step(s) {_span(steps)} not evaluated" if steps else ""
        return f"rules process ({why}): {doing}{pend}"

    # ---- pipes ------------------------------------------------------------------------------
    def _send(self, msg: protocol.ToRules) -> None:
        with self._send_lock:
            self._out.send(msg)

    def _recv_within(self, seconds: float, what: str) -> object:
        if not self._in.poll(seconds):
            raise RulesProcessError(f"the rules process did not {what} within {seconds:.0f} s")
        try:
            return self._in.recv()
        except EOFError:
            time.sleep(0.2)
            raise RulesProcessError(f"the rules process exited during {what} (exit code {self.proc.poll()}; "
                                    "its error, if any, is on stderr)") from None

    def _kill(self, grace: float = 0.0) -> None:
        """End the child (after `grace` seconds for it to exit by itself) and close the pipes."""
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        for c in (self._out, self._in):
            try:
                c.close()
            except OSError:
                pass

    # ---- threads -----------------------------------------------------------------------------
    def _send_steps(self) -> None:
        """Wait until saved steps are on disk (readable by the child), then send them, in order."""
        while True:
            items = [self._steps.get()]
            while True:
                try:
                    items.append(self._steps.get_nowait())
                except queue.Empty:
                    break
            steps = [s for s in items if s is not None]
            try:
                if steps:
                    if self.hook.writer is not None:
                        # readable by the child (an object store shows a segment once it is closed);
                        # measured: cheaper for training than the child polling the run for them
                        self.hook.writer.flush()
                    self._sent.update(steps)
                    self._send(protocol.Steps(steps))
                if None in items:
                    self._send(protocol.Close())
                    return
            except (OSError, ValueError):  # the child is gone: the receiver reports it
                return
            except Exception as e:  # noqa: BLE001
                self.hook._report("live rules could not pass a step on", e)

    def _receive(self) -> None:
        """Record the child's results and run the actions of those that fired."""
        while True:
            try:
                msg = self._in.recv()
            except (EOFError, OSError) as e:
                if not self._done and not self._dead:
                    self._dead = True
                    try:
                        code = self.proc.wait(2.0)
                    except subprocess.TimeoutExpired:
                        code = None
                    self.hook._report("live rules process exited unexpectedly; rules are no longer evaluated",
                                      RulesProcessError(f"exit code {code}" if code is not None else repr(e)))
                    self._acks.put(_Gone("the rules process exited"))
                return
            except Exception as e:  # noqa: BLE001 - e.g. a result that cannot be unpickled here
                self.hook._report("live rules sent a result that could not be read", e)
                continue
            if not isinstance(msg, protocol.Busy):  # a rule stuck in a loop is no sign of life
                self._last_msg = time.monotonic()
            try:
                self._handle(msg)
            except Exception as e:  # noqa: BLE001
                self.hook._report("live rules could not record a result", e)
            if self._done:
                return

    def _handle(self, msg: object) -> None:
        """Act on one message from the child (an unknown one: ProtocolError, reported)."""
        if self._dead and not isinstance(msg, protocol.Done):  # close() gave up on the child: late results
            return  # are not the run's
        if isinstance(msg, protocol.Results):
            self._record(msg)
        elif isinstance(msg, protocol.Skipped):  # the CPU budget skipped these saved steps
            self._sent.difference_update(msg.steps)
            if self.hook.writer is not None:
                self.hook.writer.submit_record({
                    "type": "event", "event": "rules_skipped", "steps": list(msg.steps), "time": time.time(),
                    "detail": f"live rules skipped {len(msg.steps)} saved step(s) to stay within their CPU budget "
                              "(TENSORTAP_RULES_CPU, automatic when unset); the newest saved step was evaluated "
                              "instead"})
        elif isinstance(msg, protocol.Added):
            self._acks.put(msg)
        elif isinstance(msg, protocol.Busy):  # the child has been on one thing for a while (named if close() gives up)
            self._child_busy.start(msg.what)
            self._child_busy.since -= protocol.BUSY_AFTER
        elif isinstance(msg, protocol.Failure):
            self.hook._report(msg.what, msg.exception())
        elif isinstance(msg, protocol.Done):
            self.stats = dict(msg.stats)
            self._done = True
        else:
            protocol.expect(msg, protocol.Results, protocol.Skipped, protocol.Added, protocol.Busy, protocol.Failure,
                            protocol.Done)

    def _record(self, msg: protocol.Results) -> None:
        """Record the results of one step and run the actions of those that fired."""
        self._child_busy.stop()
        self._sent.discard(msg.step)
        self._trial._stale = True
        for key, blob in msg.states.items():  # the rule's state in the child, onto the user's instance
            if key in self._rules:
                self._rules[key][0].__dict__.update(pickle.loads(blob))
        items = []
        for key, res in msg.results:
            if key in self._rules:
                rule, actions = self._rules[key]
                rule.last_result = res
                items.append((rule, actions, res))
        # the child's record holds every result; made here again if one is not the hook's
        apply_results(self.hook, items, self._trial, msg.record if len(items) == len(msg.results) else None,
                      activity=self._acting)


def _span(steps: list[int]) -> str:
    """"3", "3, 4", "3 ... 40 (38)": a list of steps, short."""
    if len(steps) <= 3:
        return ", ".join(map(str, steps))
    return f"{steps[0]} ... {steps[-1]} ({len(steps)})"


def _child_env() -> dict[str, str]:
    """The training process's environment, with one thread for numpy's BLAS/OpenMP unless the
    user chose otherwise: the rules process evaluates one rule at a time, and BLAS helper
    threads would only compete with training for the CPUs."""
    env = dict(os.environ)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(k, "1")
    return env
