"""How a Trial, a Tensor and rule results show in Jupyter (`_repr_html_`): small tables, every
value escaped (names and messages come from the run, which may be a stranger's)."""
from __future__ import annotations

import html
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

#: rows shown before "… N more"
MAX_ROWS = 30
_STYLE = ("border-collapse:collapse;font-size:12px;margin:2px 0")
_CELL = "border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top"
_OUTCOME_COLOUR = {"fired": "#c00", "quiet": "#2a7a2a", "skipped": "#8a6d00"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True).encode("utf-8", "replace").decode("utf-8")


def table(rows: Iterable[Sequence[Any]], header: Optional[Sequence[str]] = None, raw: Sequence[int] = ()) -> str:
    """An HTML table; cells escaped except the columns in `raw` (already HTML made here)."""
    out = [f'<table style="{_STYLE}">']
    if header:
        out.append("<tr>" + "".join(f'<th style="{_CELL};background:#f4f4f4">{_e(h)}</th>' for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f'<td style="{_CELL}">{c if i in raw else _e(c)}</td>' for i, c in enumerate(r))
                   + "</tr>")
    return "".join(out) + "</table>"


def _title(kind: str, name: str, note: str = "") -> str:
    return (f'<div style="font-size:13px;margin:2px 0"><b>{_e(kind)}</b> <code>{_e(name)}</code>'
            + (f' <span style="color:#777">{_e(note)}</span>' if note else "") + "</div>")


def outcome(r: Any) -> str:
    """fired / quiet / skipped of a RuleResult or a recorded result dict."""
    get = r.get if isinstance(r, dict) else (lambda k, d=None: getattr(r, k, d))
    return "skipped" if get("skipped") else ("fired" if get("fired") else "quiet")


def _badge(o: str) -> str:
    return f'<span style="color:{_OUTCOME_COLOUR.get(o, "#333")};font-weight:600">{_e(o)}</span>'


def _span(steps: List[int]) -> str:
    return f"{len(steps)} ({steps[0]}–{steps[-1]})" if steps else "0"


def trial_html(trial) -> str:
    """A run: state, steps, workers, collections, and what its rules found."""
    from .serve.state import run_state

    try:
        st = run_state(trial)
        state = f"{st.state}: {st.detail}"
    except Exception as e:  # noqa: BLE001 - a repr must not raise
        state = f"unknown ({type(e).__name__})"
    steps = trial.steps()
    rows = [("path", trial.path), ("state", state), ("framework", trial.framework or "unknown"),
            ("workers", ", ".join(trial.workers()) or "none"), ("steps", _span(steps)),
            ("tensors", len(trial.tensor_names()))]
    colls = trial.collections()
    out = [_title("Trial", trial.name), table(rows)]
    if colls:
        out.append(table([(c, len(n), ", ".join(n[:6]) + (" …" if len(n) > 6 else "")) for c, n in colls.items()],
                         ["collection", "tensors", "names"]))
    recs = trial.rule_results()
    if recs:
        by: dict = {}
        for r in recs:
            c = by.setdefault(str(r.get("rule")), {"fired": 0, "quiet": 0, "skipped": 0})
            c[outcome(r)] += 1
        out.append(table([(n, c["fired"], c["quiet"], c["skipped"]) for n, c in sorted(by.items())],
                         ["rule", "fired", "quiet", "skipped (nothing to check)"]))
    if trial.problems:
        out.append(f'<div style="color:#a00;font-size:12px">{_e(len(trial.problems))} problem(s) the reader skipped: '
                   f"{_e(trial.problems[0])}</div>")
    return "".join(out)


def tensor_html(tensor) -> str:
    """A tensor: collections, steps, and its value at the last saved step (shape, dtype, stats)."""
    steps = tensor.steps()
    rows = [("collections", ", ".join(tensor.collections) or "none"), ("steps", _span(steps))]
    value_steps = tensor.steps(kind="value")
    if value_steps:
        s = value_steps[-1]
        try:
            v = np.asarray(tensor.value(s))
            rows += [(f"at step {s}", f"shape {tuple(v.shape)}, {v.dtype}")]
            if v.dtype.kind in "biuf" and 0 < v.size <= 50_000_000:
                f = v.astype(np.float64, copy=False)
                fin = f[np.isfinite(f)]
                if fin.size:
                    rows.append(("min / mean / max", f"{fin.min():.6g} / {fin.mean():.6g} / {fin.max():.6g}"))
                if fin.size != f.size:
                    rows.append(("non-finite", f"{int(np.isnan(f).sum())} NaN, {int(np.isinf(f).sum())} inf"))
        except Exception as e:  # noqa: BLE001 - a repr must not raise: say what went wrong
            rows.append((f"at step {s}", f"unreadable: {e}"))
    elif steps:
        try:
            rows.append((f"reductions at step {steps[-1]}",
                         ", ".join(f"{k}={v:.6g}" for k, v in tensor.reduction_values(steps[-1]).items()
                                   if isinstance(v, float))))
        except Exception:  # noqa: BLE001
            pass
    return _title("Tensor", tensor.name, f"in {tensor.trial.name}") + table(rows)


def results_html(results: Sequence[Any]) -> str:
    """Rule results (RuleResult objects or recorded dicts): counts of each outcome, then the rows,
    fired and skipped first."""
    res = list(results)
    counts = {"fired": 0, "quiet": 0, "skipped": 0}
    for r in res:
        counts[outcome(r)] += 1
    get = lambda r, k: r.get(k) if isinstance(r, dict) else getattr(r, k, None)  # noqa: E731
    order = sorted(res, key=lambda r: (outcome(r) == "quiet", get(r, "step") if isinstance(get(r, "step"), int) else 0))
    rows = [(get(r, "step"), get(r, "rule"), _badge(outcome(r)), get(r, "message") or "") for r in order[:MAX_ROWS]]
    head = (f'<div style="font-size:13px"><b>{len(res)} rule result{"s" if len(res) != 1 else ""}</b>: '
            + ", ".join(f"{_badge(k)} {v}" for k, v in counts.items()) + "</div>")
    more = f'<div style="color:#777;font-size:12px">… {len(res) - MAX_ROWS} more</div>' if len(res) > MAX_ROWS else ""
    return head + (table(rows, ["step", "rule", "outcome", "message"], raw=(2,)) if rows else "") + more


class RuleResults(list):
    """The list `tt.invoke_rule` returns: a plain list of RuleResult that shows as a table in Jupyter."""

    def _repr_html_(self) -> str:
        return results_html(self)
