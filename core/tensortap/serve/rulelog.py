"""Rule results of a run as compact arrays: per rule, each evaluation's step and outcome (fired,
quiet, or skipped for lack of data) with its message; bucketed for a timeline of any length."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

QUIET, FIRED, SKIPPED = 0, 1, 2
OUTCOMES = ("quiet", "fired", "skipped")


def outcome(rec: dict) -> int:
    """A recorded result's outcome code: skipped (it checked nothing) is kept apart from quiet."""
    from ..reprs import outcome as name

    return OUTCOMES.index(name(rec))


def _int(x) -> Optional[int]:
    if isinstance(x, bool):
        return None
    try:
        return int(x)
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass
class RuleLog:
    """Every evaluation of one rule, in step order."""

    name: str
    steps: np.ndarray
    outcomes: np.ndarray
    messages: List[str] = field(default_factory=list)
    workers: List[str] = field(default_factory=list)
    checked: List[Optional[int]] = field(default_factory=list)  # tensors checked, where the result says

    def counts(self, lo: Optional[int] = None, hi: Optional[int] = None) -> Dict[str, int]:
        m = self._mask(lo, hi)
        o = self.outcomes[m]
        return {name: int((o == code).sum()) for code, name in enumerate(OUTCOMES)}

    def _mask(self, lo: Optional[int], hi: Optional[int]) -> np.ndarray:
        m = np.ones(len(self.steps), bool)
        if lo is not None:
            m &= self.steps >= lo
        if hi is not None:
            m &= self.steps <= hi
        return m

    def buckets(self, lo: int, hi: int, n: int) -> List[List[int]]:
        """[first step, last step, quiet, fired, skipped] per bucket of [lo, hi] (empty ones left out);
        one bucket per step when the window holds no more than `n` distinct steps."""
        m = self._mask(lo, hi)
        st, oc = self.steps[m], self.outcomes[m]
        if not st.size:
            return []
        uniq = np.unique(st)
        if len(uniq) <= n:
            edges = np.append(uniq, uniq[-1] + 1)
        else:
            edges = np.unique(np.linspace(lo, hi + 1, n + 1).astype(np.int64))
        which = np.searchsorted(edges, st, side="right") - 1
        out = []
        for b in np.unique(which).tolist():
            sel = which == b
            o = oc[sel]
            s = st[sel]
            out.append([int(s.min()), int(s.max()), int((o == QUIET).sum()), int((o == FIRED).sum()),
                        int((o == SKIPPED).sum())])
        return out

    def _row(self, i: int) -> dict:
        return {"rule": self.name, "step": int(self.steps[i]), "outcome": OUTCOMES[int(self.outcomes[i])],
                "message": self.messages[i], "worker": self.workers[i],
                "checked": self.checked[i] if i < len(self.checked) else None}

    def results(self, lo: Optional[int], hi: Optional[int], limit: int) -> List[dict]:
        """At most `limit` evaluations in [lo, hi]: fired and skipped first, then the latest quiet
        ones; in step order."""
        idx = np.nonzero(self._mask(lo, hi))[0]
        rank = np.where(self.outcomes[idx] == QUIET, 1, 0)
        order = idx[np.lexsort((-self.steps[idx], rank))][:limit]
        return [self._row(i) for i in sorted(order.tolist(), key=lambda i: self.steps[i])]

    def of(self, code: int, lo: Optional[int] = None, hi: Optional[int] = None, limit: int = 300) -> List[dict]:
        """The evaluations with outcome `code` in [lo, hi], evenly thinned to `limit`, in step order."""
        idx = np.nonzero(self._mask(lo, hi) & (self.outcomes == code))[0].tolist()
        from ..vis._common import pick_evenly

        return [self._row(i) for i in pick_evenly(idx, limit)]


def _row(r: dict) -> Optional[tuple]:
    """(rule, step, outcome, message, worker, checked) of a recorded result, None if malformed."""
    name, step = r.get("rule"), _int(r.get("step"))
    if not isinstance(name, str) or step is None:
        return None
    msg = r.get("message")
    msg = msg if isinstance(msg, str) else str(msg or "")
    reason = r.get("reason")  # why a result was skipped, where the rule records it apart
    if isinstance(reason, str) and reason and reason not in msg:
        msg = f"{msg} ({reason})" if msg else reason
    return name, step, outcome(r), msg, str(r.get("worker", "")), _int(r.get("checked"))


def _merge(old: Optional[RuleLog], name: str, rows: List[tuple]) -> RuleLog:
    """`old` with `rows` added, in step order (a result written late lands where its step is)."""
    steps = np.array([t[1] for t in rows], np.int64)
    outs = np.array([t[2] for t in rows], np.int8)
    msgs, workers, checked = [t[3] for t in rows], [t[4] for t in rows], [t[5] for t in rows]
    if old is not None:
        steps, outs = np.concatenate([old.steps, steps]), np.concatenate([old.outcomes, outs])
        msgs, workers, checked = old.messages + msgs, old.workers + workers, old.checked + checked
    order = np.argsort(steps, kind="stable")
    if len(order) and not (order[1:] > order[:-1]).all():
        steps, outs = steps[order], outs[order]
        idx = order.tolist()
        msgs, workers, checked = [msgs[i] for i in idx], [workers[i] for i in idx], [checked[i] for i in idx]
    return RuleLog(name, steps, outs, msgs, workers, checked)


def build(records: List[dict]) -> Dict[str, RuleLog]:
    """rule name -> RuleLog from `trial.rule_results()` (malformed records are left out)."""
    logs = RuleLogs()
    logs.add(records)
    return logs.logs


class RuleLogs:
    """rule -> RuleLog of a growing run, extended with only the results recorded since the last
    update (`trial.rule_results_since`)."""

    def __init__(self) -> None:
        self.logs: Dict[str, RuleLog] = {}
        self._cursor: Optional[Dict[str, int]] = None

    def update(self, trial) -> None:
        records, self._cursor = trial.rule_results_since(self._cursor)
        self.add(records)

    def add(self, records: List[dict]) -> None:
        new: Dict[str, List[tuple]] = {}
        for r in records:
            row = _row(r)
            if row is not None:
                new.setdefault(row[0], []).append(row)
        for name, rows in new.items():
            self.logs[name] = _merge(self.logs.get(name), name, rows)
        if new:
            self.logs = dict(sorted(self.logs.items()))
