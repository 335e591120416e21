"""The live rules process: loads the rules the training process sends, tails the run, evaluates
them at each saved step it is told about, and sends the results back (messages: protocol.py).
Started by tensortap.rules.process.RulesProcess; it exits when told to close or when the training
process goes away (its pipe reaches end of file)."""
from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import protocol
from .activity import Activity
from .evaluator import Evaluator
from .protocol import BUSY_AFTER, ToRules, ToTraining
from .results import RuleResult, results_record

#: a rule's state bigger than this (pickled) is not copied back to the training process
MAX_STATE_BYTES = 1 << 20
#: environment variable: the rules process's niceness increment (0: none)
NICE_ENV = "TENSORTAP_RULES_NICE"
#: environment variable: the share of one CPU the rules process may use on average (e.g. 0.1);
#: when evaluating costs more, steps saved in between are skipped (0: every step evaluated; unset:
#: the automatic budget below)
CPU_ENV = "TENSORTAP_RULES_CPU"
#: the automatic budget (TENSORTAP_RULES_CPU unset): none where the rules process has a core of its
#: own (this many usable CPUs or more: training's thread, the writer's, the rules') ...
AUTO_CORES = 4
#: ... else this share of one CPU on average (training loses at most a tenth of a core: <= 1.10x) ...
AUTO_SHARE = 0.1
#: ... once the rules have used this many CPU-seconds (a burst: short runs evaluate every step)
AUTO_BURST = 2.0
#: environment variable (debugging): profile the rules process (CPU time) with cProfile and write the stats
#: to "<value>.<pid>" when it exits (read them with python -m pstats)
PROFILE_ENV = "TENSORTAP_RULES_PROFILE"

Send = Callable[[ToTraining], None]


def main(fd_in: int, fd_out: int) -> None:
    """Serve one training process over the two pipe descriptors it passed."""
    out = os.environ.get(PROFILE_ENV)
    if not out:
        return _serve(fd_in, fd_out)
    import cProfile

    prof = cProfile.Profile(time.process_time)  # CPU time: being preempted is not cost
    try:
        prof.runcall(_serve, fd_in, fd_out)
    finally:
        prof.dump_stats(f"{out}.{os.getpid()}")


def _serve(fd_in: int, fd_out: int) -> None:
    from multiprocessing.connection import Connection

    conn_in, conn_out = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    lock = threading.Lock()

    def send(msg: ToTraining) -> None:
        with lock:
            conn_out.send(msg)

    def report(what: str, exc: BaseException) -> None:
        send(protocol.Failure.of(what, exc))

    # Ctrl-C in a terminal reaches the whole process group: training handles it; this process
    # ends when the training process closes the hook or goes away.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        init = conn_in.recv()
    except EOFError:
        return
    _nice()
    import numpy as np

    # numpy's warnings would only reach this process's stderr; the built-in rules' one-pass
    # sums overflow on purpose for huge values (an exact test follows), so stay quiet about it
    np.seterr(over="ignore", invalid="ignore")
    try:
        init = protocol.expect(init, protocol.Init)
        protocol.check_version(init)
    except protocol.ProtocolError as e:  # the training process says why, with this process's version
        send(protocol.Ready(os.getpid()))
        report("live rules process could not start", e)
        return
    ev: Evaluator[int] = Evaluator(out_dir=init.out_dir, report=report)
    w = _Worker(ev, send, *cpu_budget())
    threading.Thread(target=_tell_when_busy, args=(ev.activity, send), name="tensortap-rules-busy", daemon=True).start()
    _warm_up(init.out_dir)
    send(protocol.Ready(os.getpid()))
    while True:
        try:
            if not conn_in.poll(w.wait_timeout()):
                if w.pending:  # the CPU budget lets the next evaluation start now
                    w.evaluate()
                elif ev.open():
                    w.send_results(-1, ev.idle())
                continue
            msgs = [conn_in.recv()]
            while conn_in.poll(0):
                msgs.append(conn_in.recv())
        except (EOFError, OSError):
            return  # the training process is gone
        for msg in msgs:
            try:
                if w.handle(msg):
                    return
            except (EOFError, OSError):
                return
            except Exception as e:  # noqa: BLE001 - report, and serve the next message
                report(f"live rules process could not handle a message ({protocol.describe(msg)})", e)
        try:
            w.evaluate()
        except (EOFError, OSError):
            return
        except Exception as e:  # noqa: BLE001
            report("live rules process could not evaluate a step", e)


def _tell_when_busy(activity: Activity, send: Send) -> None:
    """Tell the training process what a rule that has run for BUSY_AFTER s is (once per rule and
    step): if close() has to give up on this process, it names the rule. Costs nothing while
    rules are quick."""
    told = None
    while True:
        time.sleep(BUSY_AFTER / 2)
        what, since = activity.what, activity.since
        if what is not None and (what, since) != told and time.monotonic() - since >= BUSY_AFTER:
            told = (what, since)
            try:
                send(protocol.Busy(what))
            except (EOFError, OSError, ValueError):
                return


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity; the rules process inherits it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS)
        return os.cpu_count() or 1


def cpu_budget() -> tuple[float, float]:
    """(share of one CPU the rules process may use on average, 0: no limit; CPU-seconds it may
    use before the share applies): TENSORTAP_RULES_CPU if set, else the automatic budget
    (AUTO_SHARE after AUTO_BURST below AUTO_CORES usable CPUs, none from there).
    ValueError naming the setting if it is not a number in [0, 1]."""
    text = os.environ.get(CPU_ENV, "").strip()
    if not text:
        return (0.0, 0.0) if usable_cpus() >= AUTO_CORES else (AUTO_SHARE, AUTO_BURST)
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{CPU_ENV}={text!r}: give the share of one CPU the live rules process may use, "
                         "a number from 0 to 1 (e.g. 0.1; 0: no limit, every saved step evaluated; unset: "
                         f"automatic, {AUTO_SHARE} below {AUTO_CORES} CPUs)")
    return (share if share < 1.0 else 0.0), 0.0


class _Worker:
    """What the rules process keeps between messages: the evaluator, the saved steps not yet
    evaluated, each rule's state as last sent, the CPU budget, and its own CPU accounting (sent
    with Done: what the benchmark reports).

    With a CPU budget (`share` of one CPU, `burst` CPU-seconds; cpu_budget()) the rules process
    holds credit: `burst` at first, earning `share` CPU-seconds per second while it waits (up to
    `burst`) and per second of each evaluation, spending the evaluation's CPU-seconds. In debt,
    it evaluates nothing until the credit is back to 0 (with no burst: c * (1/share - 1) seconds
    after an evaluation of c CPU-seconds); steps saved meanwhile wait, and when the next
    evaluation may start, only the newest of them is evaluated: the older ones are skipped
    (reported to the training process, which records an event)."""

    def __init__(self, ev: Evaluator[int], send: Send, share: float = 0.0, burst: float = 0.0) -> None:
        self.ev, self.send, self.share, self.burst = ev, send, share, burst
        self.credit = burst  # CPU-seconds the budget allows now (negative: owed)
        self.credit_at = time.monotonic()
        self.states: dict[int, bytes] = {}
        self.pending: list[int] = []
        self.next_ok = 0.0  # time.monotonic() from which the budget allows the next evaluation
        self.steps = self.skipped = 0
        self.per_step: deque[float] = deque(maxlen=1000)  # CPU seconds of the latest steps' evaluations
        self.cpu_first_step: float | None = None  # CPU seconds used before the first step came

    def wait_timeout(self) -> float | None:
        """How long to wait for a message: until the budget allows the pending step, or the idle checks."""
        idle = self.ev.idle_timeout()
        if not self.pending:
            return idle
        left = max(0.0, self.next_ok - time.monotonic())
        return left if idle is None else min(left, idle)

    def handle(self, msg: ToRules) -> bool:
        """Act on one message from the training process; True when it says to close."""
        if isinstance(msg, protocol.AddRule):
            try:
                sys.path.extend(p for p in msg.sys_path if p not in sys.path)  # the training process's, now
                self.ev.rules[msg.key] = pickle.loads(msg.blob)
                self.send(protocol.Added(msg.key))
            except Exception as e:  # noqa: BLE001
                self.send(protocol.Added(msg.key, f"{type(e).__name__}: {e}"))
        elif isinstance(msg, protocol.Steps):
            if self.cpu_first_step is None:
                self.cpu_first_step = time.process_time()
            self.pending.extend(msg.steps)
        elif isinstance(msg, protocol.Close):
            self.evaluate(final=True)  # the last saved step is always evaluated
            cpu = time.process_time()
            first = cpu if self.cpu_first_step is None else self.cpu_first_step
            self.send(protocol.Done({"steps": self.steps, "skipped": self.skipped, "cpu_s": cpu,
                            "cpu_steps_s": cpu - first, "per_step": list(self.per_step)}))
            return True
        else:
            protocol.expect(msg, protocol.AddRule, protocol.Steps, protocol.Close)
        return False

    def evaluate(self, final: bool = False) -> None:
        """Evaluate the pending steps, in order; with a budget, in order while the credit covers
        one more evaluation (the burst), else the newest one when the budget allows: in debt by
        at most one evaluation's cost, two with close()'s."""
        if not self.pending or (self.share and not final and time.monotonic() < self.next_ok):
            return
        steps, self.pending = self.pending, []
        if self.share:
            while len(steps) > 1 and self.credit_now() > (self.per_step[-1] if self.per_step else 0.0):
                self._evaluate(steps.pop(0))
            if len(steps) > 1:
                self.skipped += len(steps) - 1
                self.send(protocol.Skipped(steps[:-1]))
                steps = steps[-1:]
        for step in steps:
            self._evaluate(step)

    def _evaluate(self, step: int) -> None:
        c0, t0 = time.process_time(), time.monotonic()
        if self.ev.open():
            self.send_results(step, self.ev.at_step(step))
            self.per_step.append(time.process_time() - c0)
            self.steps += 1
        if self.share:
            self.spend(time.process_time() - c0, t0)

    def credit_now(self) -> float:
        """CPU-seconds the budget allows now (negative: owed)."""
        return min(self.burst, self.credit + self.share * max(0.0, time.monotonic() - self.credit_at))

    def spend(self, cpu: float, started: float) -> None:
        """Account an evaluation of `cpu` CPU-seconds that started at `started` (time.monotonic)."""
        now = time.monotonic()
        idle = min(self.burst, self.credit + self.share * max(0.0, started - self.credit_at))
        self.credit = min(self.burst, idle + self.share * (now - started) - cpu)
        self.credit_at = now
        self.next_ok = now + max(0.0, -self.credit) / self.share

    def send_results(self, step: int, results: list[tuple[int, RuleResult]]) -> None:
        """Send the results with ONE index record holding them all (the training process writes
        it as it is) and the public state of each rule that changed (copied onto the instance the
        user holds, so code reading a rule's attributes sees them change)."""
        if not results:
            return
        changed = {}
        for key, _ in results:
            st = rule_state(self.ev.rules[key])
            if st is not None and st != self.states.get(key):
                self.states[key] = changed[key] = st
        record = results_record([r for _, r in results])
        try:
            self.send(protocol.Results(step, results, changed, record))
        except (EOFError, OSError):
            raise
        except Exception:  # noqa: BLE001 - values that do not pickle: their JSON form
            self.send(protocol.Results(step, [(k, protocol.picklable(r)) for k, r in results], changed, record))


def rule_state(rule: Any) -> bytes | None:
    """A rule's public attributes (names not starting with "_"; last_result aside: it comes with
    the result), pickled; None if there are none, they do not pickle, or they exceed
    MAX_STATE_BYTES (then they are not copied back). Private attributes (a built-in rule's
    history) stay in the rules process: copying them at every step cost training time."""
    d = {k: v for k, v in getattr(rule, "__dict__", {}).items() if k != "last_result" and not k.startswith("_")}
    try:
        blob = pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001
        return None
    return blob if len(blob) <= MAX_STATE_BYTES else None


def _warm_up(out_dir: str) -> None:
    """Import the run's filesystem (s3fs, ...) now, while add_rule waits, not while training runs."""
    with contextlib.suppress(Exception):  # opening the run reports it properly later
        from .. import trial  # noqa: F401 - the first look at the run imports nothing more
        from ..store.fs import resolve

        fs, root = resolve(out_dir)
        fs.exists(root)  # a remote store: credentials and a connection


def _nice() -> None:
    """Rules yield the CPU to training when both want it (TENSORTAP_RULES_NICE, default 5)."""
    try:
        inc = int(os.environ.get(NICE_ENV, "5"))
        if inc > 0 and hasattr(os, "nice"):
            os.nice(inc)
    except (ValueError, OSError):
        pass
