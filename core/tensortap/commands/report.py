"""`tensortap report RUN --out report.html`: one self-contained HTML page about a run."""
from __future__ import annotations

import os
import sys
from typing import Dict

from ..errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run (summary, rules, visualizers)")
    p.add_argument("run", help="run directory or fsspec URL")
    p.add_argument("--out", "-o", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--title", default=None, help="page title")
    p.add_argument("--skip", action="append", default=[], metavar="NAME", help="leave a visualizer out (repeatable)")
    p.add_argument("--opt", action="append", default=[], metavar="VIS.K=V",
                   help="option of one visualizer, e.g. --opt embedding.method=pca (repeatable)")
    p.add_argument("--keep-going", action="store_true",
                   help="when a section fails, write the report with the rest (failures marked; exit 1) "
                        "instead of writing nothing (exit 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import vis
    from ..extras import missing_extra
    from ..report import ReportError, build_report
    from ..report.html import failure_line
    from .vis import parse_options

    options: Dict[str, Dict[str, object]] = {}
    for pair in args.opt:
        head, _, _ = pair.partition("=")
        if "." not in head:
            raise ConfigError(f"--opt for a report is VISUALIZER.KEY=VALUE (e.g. embedding.method=pca), got {pair!r}")
        name, rest = pair.split(".", 1)
        options.setdefault(name, {}).update(parse_options(vis.get(name), [rest]))
    for name in args.skip:
        vis.get(name)  # a clear error for a misspelt name
    try:
        path = build_report(args.run, args.out, title=args.title, skip=args.skip, options=options,
                            keep_going=args.keep_going)
    except ReportError as e:
        print(f"tensortap: error: report {e}", file=sys.stderr)
        hint = missing_extra(e)
        if hint:
            print(f"tensortap: {hint}", file=sys.stderr)
        print(f"tensortap: nothing written to {args.out}; --keep-going writes the report with the failed "
              "sections marked", file=sys.stderr)
        return 2
    print(os.path.abspath(str(path)))
    if not path.failures:
        return 0
    for name, exc in path.failures:
        print(f"tensortap: error: report {failure_line(name, exc)}", file=sys.stderr)
    for hint in dict.fromkeys(h for _, exc in path.failures for h in (missing_extra(exc),) if h):
        print(f"tensortap: {hint}", file=sys.stderr)
    print(f"tensortap: {len(path.failures)} section(s) failed; the report shows the rest", file=sys.stderr)
    return 1
