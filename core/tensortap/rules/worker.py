"""The live rules process: loads the rules the training process sends, tails the run, evaluates
them at each saved step it is told about, and sends the results back. Started by
tensortap.rules.process.RulesProcess; it exits when told to close or when the training process
goes away (its pipe reaches end of file)."""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

#: a rule's state bigger than this (pickled) is not copied back to the training process
MAX_STATE_BYTES = 1 << 20
#: environment variable: the rules process's niceness increment (0: none)
NICE_ENV = "TENSORTAP_RULES_NICE"
#: environment variable (debugging): profile the rules process (CPU time) with cProfile and write the stats
#: to "<value>.<pid>" when it exits (read them with python -m pstats)
PROFILE_ENV = "TENSORTAP_RULES_PROFILE"


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

    def send(msg: tuple) -> None:
        with lock:
            conn_out.send(msg)

    def report(what: str, exc: BaseException) -> None:
        try:
            pickle.dumps(exc)
            send(("error", what, exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its name and text
            send(("error", what, (type(exc).__name__, str(exc))))

    # Ctrl-C in a terminal reaches the whole process group: training handles it; this process
    # ends when the training process closes the hook or goes away.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        init = conn_in.recv()
    except EOFError:
        return
    _nice()
    from .live import Evaluator

    ev = Evaluator(init[1]["out_dir"], report)
    w = _Worker(ev, send)
    _warm_up(ev.out_dir)
    send(("ready", os.getpid()))
    while True:
        try:
            if not conn_in.poll(ev.idle_timeout()):
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
                report(f"live rules process could not handle a {msg[0]!r} message", e)


class _Worker:
    """What the rules process keeps between messages: the evaluator, each rule's state as last
    sent, and its own CPU accounting (sent with "done": what the benchmark reports)."""

    def __init__(self, ev, send) -> None:
        self.ev, self.send = ev, send
        self.states: Dict[Any, bytes] = {}
        self.steps = 0
        self.per_step: List[float] = []
        self.cpu_first_step: Optional[float] = None  # CPU seconds used before the first step came

    def handle(self, msg: tuple) -> bool:
        """Act on one message from the training process; True when it says to close."""
        kind, ev = msg[0], self.ev
        if kind == "rule":
            try:
                sys.path.extend(p for p in msg[3] if p not in sys.path)  # the training process's, now
                ev.rules[msg[1]] = pickle.loads(msg[2])
                self.send(("added", msg[1], None))
            except Exception as e:  # noqa: BLE001
                self.send(("added", msg[1], f"{type(e).__name__}: {e}"))
        elif kind == "steps":
            if self.cpu_first_step is None:
                self.cpu_first_step = time.process_time()
            if ev.open():
                for step in msg[1]:
                    c0 = time.process_time()
                    self.send_results(step, ev.at_step(step))
                    self.per_step.append(time.process_time() - c0)
                    self.steps += 1
        elif kind == "close":
            cpu = time.process_time()
            first = cpu if self.cpu_first_step is None else self.cpu_first_step
            self.send(("done", {"steps": self.steps, "cpu_s": cpu, "cpu_steps_s": cpu - first, "per_step": self.per_step}))
            return True
        return False

    def send_results(self, step: int, results: List[Any]) -> None:
        """Send the results with ONE index record holding them all (the training process writes
        it as it is) and the public state of each rule that changed (copied onto the instance the
        user holds, so code reading a rule's attributes sees them change)."""
        if not results:
            return
        from .base import results_record

        changed = {}
        for key, _ in results:
            st = rule_state(self.ev.rules[key])
            if st is not None and st != self.states.get(key):
                self.states[key] = changed[key] = st
        record = results_record([r for _, r in results])
        try:
            self.send(("results", step, results, changed, record))
        except (EOFError, OSError):
            raise
        except Exception:  # noqa: BLE001 - values that do not pickle: their JSON form
            from .process import result_message

            self.send(("results", step, [(k, result_message(r)) for k, r in results], changed, record))


def rule_state(rule) -> Optional[bytes]:
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


def _warm_up(out_dir) -> None:
    """Import the run's filesystem (s3fs, ...) now, while add_rule waits, not while training runs."""
    try:
        from .. import trial  # noqa: F401 - the first look at the run imports nothing more
        from ..store.fs import resolve
        from . import cache  # noqa: F401

        fs, root = resolve(out_dir)
        fs.exists(root)  # a remote store: credentials and a connection
    except Exception:  # noqa: BLE001 - opening the run reports it properly later
        pass


def _nice() -> None:
    """Rules yield the CPU to training when both want it (TENSORTAP_RULES_NICE, default 5)."""
    try:
        inc = int(os.environ.get(NICE_ENV, "5"))
        if inc > 0 and hasattr(os, "nice"):
            os.nice(inc)
    except (ValueError, OSError):
        pass
