"""One self-contained HTML page about a run: what was captured, what the rules found, and every
visualizer that applies, with plots embedded (base64) and nothing fetched from the network."""
from __future__ import annotations

import datetime as _dt
import html
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .._version import __version__
from ..errors import TensorTapError
from ..extras import missing_extra
from ..progress import progress
from ..summary import human_size, run_summary
from ..vis._common import Rendered, as_trial, csp_hash

#: options the report passes to visualizers by default (keeps a report of a large run quick)
REPORT_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "embedding": {"max_points": 600, "max_steps": 8},
    "attention": {"max_steps": 20},
    "distributions": {"max_steps": 100},
}
#: visualizers first in the page, in this order; others follow by name
ORDER = ("scalars", "distributions", "pruning", "gradcam", "attention", "embedding")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:18px 0 6px} .muted{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} .fired{color:#b00;font-weight:600} .ok{color:#070} .nodata{color:#8a5a00;font-weight:600}
.err{background:#fff0f0;border:1px solid #e99;padding:8px;font-size:13px}
img.plot{max-width:100%;border:1px solid #eee} iframe.view{width:100%;height:720px;border:1px solid #eee}
code{background:#f5f5f5;padding:0 3px} details{margin:6px 0}
"""
#: the page's Content-Security-Policy: no script runs but the visualizers' own, each allowed by its
#: hash ({scripts}: 'none' when no embedded page has one); nothing is fetched
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {scripts}; "
       "frame-src 'self' data: about:; base-uri 'none'; form-action 'none'")


class ReportError(TensorTapError):
    """A section of the report failed (build_report without keep_going)."""


@dataclass
class _Page:
    """What the sections of one report share: the failures so far and the scripts to allow."""

    keep_going: bool
    failures: List[Tuple[str, BaseException]] = field(default_factory=list)
    scripts: List[str] = field(default_factory=list)

    def section(self, name: str, make: Callable[[], str]) -> str:
        """`make()`'s HTML, or (keep_going) a box saying the section failed; else ReportError."""
        try:
            return make()
        except Exception as e:  # noqa: BLE001 - any failure of a section is the report's to say
            if not self.keep_going:
                raise ReportError(failure_line(name, e)) from e
            self.failures.append((name, e))
            hint = missing_extra(e)
            return (f"<div class=err>{_e(name)} failed: {_e(type(e).__name__)}: {_e(e)}"
                    + (f"<br>{_e(hint)}" if hint else "") + "</div>")


def failure_line(name: str, exc: BaseException) -> str:
    """"section 'x' failed: Error: why" (one line)."""
    text = " ".join(str(exc).split())
    return f"section {name!r} failed: {type(exc).__name__}: {text}"


def _e(x: Any) -> str:
    """`x` as HTML text: markup escaped, and a lone surrogate (a name no UTF-8 can hold) as \\udXXX."""
    return html.escape(str(x).encode("utf-8", "backslashreplace").decode("utf-8"), quote=True)


def _table(rows: Iterable[Iterable[Any]], header: Optional[List[str]] = None, raw_cols: Iterable[int] = ()) -> str:
    raw = set(raw_cols)
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c if i in raw else _e(c)}</td>" for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _summary_section(trial, s: dict) -> str:
    per_mode = ", ".join(f"{m}: {n}" for m, n in s["steps_per_mode"].items()) or "-"
    span = f"{s['first_step']} … {s['last_step']}" if s["steps"] else "-"
    rows = [
        ("run", s["run"]), ("framework", s["framework"] or "unknown"),
        ("state", "complete" if s["complete"] else "in progress or interrupted"),
        ("workers", f"{len(s['workers'])}: {', '.join(s['workers'])}"),
        ("steps", f"{s['steps']} saved ({span}); per mode: {per_mode}"),
        ("tensors", f"{s['tensors']}, {human_size(int(s['bytes']))}"),
    ]
    meta = trial.metadata
    for k in ("framework_version", "versions", "hostname", "python"):
        if meta.get(k):
            rows.append((k, meta[k]))
    out = ["<h2>Run</h2>", _table(rows)]
    out.append("<h3>Collections</h3>")
    colls = trial.collections()
    out.append(_table([(c, len(n), ", ".join(n[:8]) + (" …" if len(n) > 8 else "")) for c, n in colls.items()],
                      ["collection", "tensors", "names"]))
    names = trial.tensor_names()
    out.append(f"<details><summary>All {len(names)} tensor names</summary>"
               + _table([(n, ", ".join(trial.tensor(n).collections)) for n in names[:2000]], ["tensor", "collections"])
               + ("<p class=muted>(first 2000 shown)</p>" if len(names) > 2000 else "") + "</details>")
    if s["events"]:
        out.append("<h3>Events</h3>" + _table([(e.get("event"), e.get("what") or e.get("detail") or e.get("why", ""),
                                                 e.get("error", "")) for e in s["events"][:200]],
                                               ["event", "what", "error"]))
    if s["problems"]:
        out.append("<h3>Problems the reader skipped</h3>" + _table([(p,) for p in s["problems"][:200]]))
    return "".join(out)


def _rules_section(trial, extra_results=None) -> str:
    """Per rule: fired (red), quiet: it checked data and never fired (green), or no data: it never
    had anything to check (amber, never green), with the skip reasons; then every firing."""
    from ..rules.outcomes import as_record, step_label, summarise

    recs = [as_record(r) for r in list(trial.rule_results()) + list(extra_results or ())]
    out = ["<h2>Rules</h2>"]
    if not recs:
        out.append("<p class=muted>No rule results recorded in this run (add rules with hook.add_rule, or run "
                   "<code>tensortap rules run RUN --rule NAME</code>).</p>")
        return "".join(out)
    rows = []
    for s in summarise(recs):
        if s.state == "fired":
            state = f"<span class=fired>fired {s.fired}×</span>"
        elif s.state == "quiet":
            state = f"<span class=ok>quiet</span> (checked {s.checked} tensors)"
        else:
            state = "<span class=nodata>no data: nothing to check</span>"
        counts = f"{s.fired} fired, {s.quiet} quiet, {s.skipped} skipped"
        first = (f"{_e(step_label(trial, s.first_fired.get('step')))}: {_e(s.first_fired.get('message', ''))}"
                 if s.first_fired is not None else "")
        why = "; ".join(_e(r) for r in s.top_reasons())
        rows.append((_e(s.rule), _e(counts), state, first, why))
    out.append(_table(rows, ["rule", "evaluations", "result", "first firing (step: why)", "skipped because"],
                      raw_cols=(0, 1, 2, 3, 4)))
    fired_all = [r for r in recs if r["outcome"] == "fired"]
    if fired_all:
        out.append(f"<details open><summary>{len(fired_all)} firings</summary>")
        out.append(_table([(step_label(trial, r.get("step")), r.get("rule"), r.get("message", ""))
                           for r in fired_all[:500]], ["step", "rule", "why"]))
        if len(fired_all) > 500:
            out.append("<p class=muted>(first 500 shown)</p>")
        out.append("</details>")
    return "".join(out)


def _embed(path: str, name: str) -> str:
    from ..vis._common import data_uri

    ext = os.path.splitext(path)[1].lower()
    if ext in (".png", ".gif", ".svg"):
        return f'<img class="plot" alt="{_e(name)}" src="{data_uri(path)}">'
    if ext == ".html":
        with open(path, encoding="utf-8") as f:
            doc = f.read()
        return f'<iframe class="view" title="{_e(name)}" sandbox="allow-scripts" srcdoc="{_e(doc)}"></iframe>'
    return f"<p class=muted>{_e(name)} wrote a {_e(ext)} file, which the report cannot embed.</p>"


def _vis_table(v, trial) -> str:
    """The numbers behind a visualizer's picture, when it gives them (`Visualizer.table`), e.g.
    accuracy against parameters at each pruning iteration."""
    got = v.table(trial)
    if not got:
        return ""
    header, rows = got
    return f"<details open><summary>{_e(len(rows))} rows</summary>" + _table(rows, list(header)) + "</details>"


def _vis_section(trial, skip: Iterable[str], options: Dict[str, Dict[str, Any]], page: _Page) -> str:
    from .. import vis

    names = vis.list()
    names = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
    skip = set(skip)
    out = ["<h2>Visualizations</h2>"]
    applicable = []
    for n in names:
        if n in skip:
            continue

        def applies(n: str = n) -> str:
            v = vis.get(n)()
            if v.applies_to(trial):
                applicable.append((n, v))
            return ""

        out.append(page.section(f"{n} (applies_to)", applies))  # a broken plugin visualizer is reported
    if not applicable:
        out.append("<p class=muted>No visualizer applies to the data in this run.</p>")
    with tempfile.TemporaryDirectory(prefix="tensortap-report-") as tmp:
        for n, v in progress(applicable, "report"):
            opts = dict(REPORT_DEFAULTS.get(n, {}))
            opts.update(options.get(n, {}))
            known = type(v).options()
            opts = {k: val for k, val in opts.items() if k in known or k in options.get(n, {})}
            out.append(f"<h3 id=\"vis-{_e(n)}\">{_e(n)}</h3><p class=muted>{_e(type(v).describe())}</p>")

            def render(n: str = n, v: Any = v, opts: Dict[str, Any] = opts) -> str:
                t0 = time.perf_counter()
                path = v.render(trial, os.path.join(tmp, n + v.suffix), **opts)
                embedded = _embed(str(path), n) + _vis_table(v, trial)
                if str(path).lower().endswith(".html"):
                    page.scripts.extend(type(v).inline_scripts())
                return (embedded + f"<p class=muted>rendered in {time.perf_counter() - t0:.1f} s · "
                        f"<code>tensortap vis {_e(n)} {_e(trial.path)} --out {_e(n + v.suffix)}</code></p>")

            out.append(page.section(n, render))
    return "".join(out)


def build_report(run, out: str, *, title: Optional[str] = None, skip: Iterable[str] = (),
                 options: Optional[Dict[str, Dict[str, Any]]] = None, rule_results=None,
                 keep_going: bool = False) -> "ReportPath":
    """Write the report of `run` (Trial or path) to `out` and return its path.

    `skip` names visualizers to leave out; `options` maps a visualizer name to its render options;
    `rule_results` adds offline results (from tt.invoke_rule) to the recorded ones. A section that
    fails raises ReportError and nothing is written; with `keep_going` the page is written with
    each failed section marked, and the returned path's `.failures` lists (section, exception).
    Every value read from the run is escaped, and no script runs in the page but the visualizers'
    own (allowed by hash in its Content-Security-Policy)."""
    trial = as_trial(run)
    page = _Page(keep_going)
    title = title or f"tensortap report · {trial.name}"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{_e(title)}</h1><p class=muted>{_e(trial.path)} · generated {now} by tensortap {__version__}</p>",
            page.section("run", lambda: _summary_section(trial, run_summary(trial))),
            page.section("rules", lambda: _rules_section(trial, rule_results)),
            _vis_section(trial, skip, options or {}, page)]
    scripts = " ".join(sorted({csp_hash(x) for x in page.scripts})) or "'none'"
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP.format(scripts=scripts)}\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n")
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=d)
    try:  # written whole, then moved into place: a failure never leaves a truncated report
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(doc)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return ReportPath(out, page.failures)


class ReportPath(Rendered):
    """The report's path (a str that displays itself in Jupyter); `.failures` lists the sections
    that failed as (name, exception) (only with keep_going: without it a failure raises)."""

    failures: List[Tuple[str, BaseException]]

    def __new__(cls, path: str, failures: List[Tuple[str, BaseException]]) -> "ReportPath":
        self = super().__new__(cls, path)
        self.failures = failures
        return self
