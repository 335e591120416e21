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
from typing import Any, Dict, List, Optional

#: a rule's state bigger than this (pickled) is not copied back to the training process
MAX_STATE_BYTES = 1 << 20
#: environment variable: the rules process's niceness increment (0: none)
NICE_ENV = "TENSORTAP_RULES_NICE"


def main(fd_in: int, fd_out: int) -> None:
    """Serve one training process over the two pipe descriptors it passed."""
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
    states: Dict[Any, bytes] = {}  # each rule's state as last sent
    _warm_up(ev.out_dir)
    send(("ready", os.getpid()))
    while True:
        try:
            if not conn_in.poll(ev.idle_timeout()):
                _send_results(send, -1, ev.idle(), ev, states)
                continue
            msgs = [conn_in.recv()]
            while conn_in.poll(0):
                msgs.append(conn_in.recv())
        except (EOFError, OSError):
            return  # the training process is gone
        for msg in msgs:
            try:
                if _handle(msg, ev, send, states):
                    return
            except (EOFError, OSError):
                return
            except Exception as e:  # noqa: BLE001 - report, and serve the next message
                report(f"live rules process could not handle a {msg[0]!r} message", e)


def _handle(msg: tuple, ev, send, states: Dict[Any, bytes]) -> bool:
    """Act on one message from the training process; True when it says to close."""
    kind = msg[0]
    if kind == "rule":
        try:
            sys.path.extend(p for p in msg[3] if p not in sys.path)  # the training process's, now
            ev.rules[msg[1]] = pickle.loads(msg[2])
            send(("added", msg[1], None))
        except Exception as e:  # noqa: BLE001
            send(("added", msg[1], f"{type(e).__name__}: {e}"))
    elif kind == "steps":
        if ev.open():
            for step in msg[1]:
                _send_results(send, step, ev.at_step(step), ev, states)
    elif kind == "close":
        send(("done",))
        return True
    return False


def _send_results(send, step: int, results: List[Any], ev, states: Dict[Any, bytes]) -> None:
    """Send the results, with the state of each rule that changed (the training process copies it
    into the instance the user holds, so code reading a rule's attributes sees them change)."""
    if not results:
        return
    from .process import result_message

    results = [(k, result_message(r)) for k, r in results]
    changed = {}
    for key, _ in results:
        st = rule_state(ev.rules[key])
        if st is not None and st != states.get(key):
            states[key] = changed[key] = st
    send(("results", step, results, changed))


def rule_state(rule) -> Optional[bytes]:
    """A rule's attributes, pickled (last_result aside: it comes with the result); None if there
    are none, they do not pickle, or they exceed MAX_STATE_BYTES (then they are not copied back)."""
    d = {k: v for k, v in getattr(rule, "__dict__", {}).items() if k != "last_result"}
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
