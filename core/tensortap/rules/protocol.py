"""What crosses the pipes between a training process and its live rules process: one dataclass per
kind of message, pickled by multiprocessing.connection.Connection. Both ends are the same tensortap
(the child is started with the parent's sys.path); PROTOCOL_VERSION, sent with Init and Ready, is
checked anyway, and a message of a type the receiver does not know is a ProtocolError that names
it, reported, never a crash.

Training process -> rules process: Init, then AddRule (each answered by Added), Steps, Close.
Rules process -> training process: Ready, Added, Results, Skipped, Busy, Failure, and Done last."""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any, Union

from .results import RuleResult, jsonable

#: bumped whenever a message changes; Init and Ready carry it and the training process checks it
PROTOCOL_VERSION = 1
#: a rule evaluating for this long is reported (Busy) to the training process, which names it if
#: close() has to give up on the rules process
BUSY_AFTER = 1.0


class ProtocolError(Exception):
    """A message the receiver does not understand (another type, another protocol version)."""


# ---- training process -> rules process ----------------------------------------------------------
@dataclass(frozen=True)
class Init:
    """The first message: the run to tail (an absolute local path or an fsspec URL)."""

    out_dir: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class AddRule:
    """A rule to evaluate, pickled, under `key`; `sys_path`: where the training process imports
    from now (a rule's module may have become importable since the child started)."""

    key: int
    blob: bytes
    sys_path: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Steps:
    """Saved steps now on disk, in increasing order."""

    steps: list[int]


@dataclass(frozen=True)
class Close:
    """No more steps: evaluate those pending, send Done, and exit."""


# ---- rules process -> training process ----------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    """The child is set up and waits for rules."""

    pid: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Added:
    """The answer to AddRule: `error` is None when the rule loaded, else why it could not."""

    key: int
    error: str | None = None


@dataclass(frozen=True)
class Results:
    """The results at saved step `step` (-1: an idle check) by rule key, the ONE index record
    holding them all (written by the training process as it is), and the public state of each
    rule that changed (pickled, copied onto the rule the user holds)."""

    step: int
    results: list[tuple[int, RuleResult]]
    states: dict[int, bytes]
    record: dict[str, Any]


@dataclass(frozen=True)
class Skipped:
    """Saved steps the CPU budget (TENSORTAP_RULES_CPU) skipped: the newest was evaluated instead."""

    steps: list[int]


@dataclass(frozen=True)
class Busy:
    """What the child has been doing for BUSY_AFTER s or more ("rule 'x' at step 3")."""

    what: str


@dataclass(frozen=True)
class Failure:
    """Something failed in the child and it goes on: `error` is the exception when it pickles,
    else (its type's name, its text)."""

    what: str
    error: BaseException | tuple[str, str]

    @classmethod
    def of(cls, what: str, exc: BaseException) -> Failure:
        try:
            pickle.dumps(exc)
            return cls(what, exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its name and text
            return cls(what, (type(exc).__name__, str(exc)))

    def exception(self) -> BaseException:
        """The child's exception, or one of the same name and text."""
        if isinstance(self.error, BaseException):
            return self.error
        name, text = self.error
        return type(str(name), (Exception,), {})(text)


@dataclass(frozen=True)
class Done:
    """The last message: what the child did (steps evaluated and skipped, CPU seconds in all
    ("cpu_s") and from the first step on ("cpu_steps_s"), CPU seconds per step)."""

    stats: dict[str, Any] = field(default_factory=dict)


ToRules = Union[Init, AddRule, Steps, Close]
ToTraining = Union[Ready, Added, Results, Skipped, Busy, Failure, Done]


def expect(msg: object, *kinds: type) -> Any:
    """`msg` if it is one of `kinds`, else a ProtocolError naming what came instead."""
    if isinstance(msg, kinds):
        return msg
    want = " or ".join(k.__name__ for k in kinds)
    raise ProtocolError(f"expected {want} (protocol {PROTOCOL_VERSION}), got {describe(msg)}")


def describe(msg: object) -> str:
    """A message for an error text: its type, and the protocol version a stranger claims."""
    v = getattr(msg, "version", None)
    return f"{type(msg).__module__}.{type(msg).__qualname__}" + (f" (protocol {v})" if v is not None else "")


def check_version(msg: Init | Ready) -> None:
    """A ProtocolError when the other side speaks another version of this protocol."""
    if msg.version != PROTOCOL_VERSION:
        raise ProtocolError(f"the other side speaks rules protocol {msg.version}, this tensortap speaks "
                            f"{PROTOCOL_VERSION}: both processes must run the same tensortap")


def picklable(res: RuleResult) -> RuleResult:
    """`res`, or a copy whose values are their JSON form when they do not pickle."""
    try:
        pickle.dumps(res.values)
        return res
    except Exception:  # noqa: BLE001 - pickle raises several types
        return dataclasses.replace(res, values=jsonable(res.values))
