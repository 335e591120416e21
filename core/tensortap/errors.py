"""Exceptions tensortap raises: every message names the problem and the fix."""
from __future__ import annotations

import difflib
from typing import Iterable


class TensorTapError(Exception):
    """Base class of every error tensortap raises on purpose."""


class ConfigError(TensorTapError, ValueError):
    """A Hook, SaveConfig, collection or rule was configured with a bad value."""


class AttentionNotFound(ConfigError):
    """tt.explain.attention found no attention it can read in the model (every framework, one message)."""


class NotARunError(TensorTapError):
    """The path given to create_trial is not a tensortap run."""


class CorruptRunError(TensorTapError):
    """A run's files are damaged beyond what the reader can skip safely."""


class WriterGoneError(TensorTapError):
    """A live run's writer stopped (killed, crashed) without closing it: no more steps will come."""


class TensorNotFound(TensorTapError, KeyError):
    """No tensor of that name in the run."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StepNotFound(TensorTapError, KeyError):
    """The tensor exists, but not at that step (or mode, or worker).

    `reason`: the same without the step, saying what to change: what a rule that hit this reports
    as its skip reason, so that one cause read at many steps is one reason (counted), not many."""

    def __init__(self, *args: object, reason: str | None = None) -> None:
        super().__init__(*args)
        self._reason = reason

    @property
    def reason(self) -> str:
        return getattr(self, "_reason", None) or str(self)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginError(TensorTapError):
    """A plugin failed to load or registered something invalid (fatal only in strict mode)."""


class StopTraining(TensorTapError):
    """Raised at a step boundary when a rule's action asked training to stop."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' Did you mean "x"?' suffix for error messages, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two short strings."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
