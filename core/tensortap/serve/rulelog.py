"""Rule results of a run as compact arrays: per rule, each evaluation's step and outcome (fired,
quiet, or skipped for lack of data) with its message; bucketed for a timeline of any length."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

QUIET, FIRED, SKIPPED = 0, 1, 2
OUTCOMES = ("quiet", "fired", "skipped")


def outcome(rec: dict) -> int:
    """A recorded result's outcome: skipped (it checked nothing) is kept apart from quiet."""
    if rec.get("skipped"):
        return SKIPPED
    return FIRED if rec.get("fired") else QUIET


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
                "message": self.messages[i], "worker": self.workers[i]}

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


def build(records: List[dict]) -> Dict[str, RuleLog]:
    """rule name -> RuleLog from `trial.rule_results()` (malformed records are left out)."""
    rows: Dict[str, list] = {}
    for r in records:
        name, step = r.get("rule"), _int(r.get("step"))
        if not isinstance(name, str) or step is None:
            continue
        msg = r.get("message")
        rows.setdefault(name, []).append((step, outcome(r), msg if isinstance(msg, str) else str(msg or ""),
                                          str(r.get("worker", ""))))
    out = {}
    for name, rs in sorted(rows.items()):
        rs.sort(key=lambda t: t[0])
        out[name] = RuleLog(name, np.array([t[0] for t in rs], np.int64), np.array([t[1] for t in rs], np.int8),
                            [t[2] for t in rs], [t[3] for t in rs])
    return out
