"""`tensortap report RUN --out report.html`: one self-contained HTML page about a run."""
from __future__ import annotations

import os
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
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import vis
    from ..report import build_report
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
    path = build_report(args.run, args.out, title=args.title, skip=args.skip, options=options)
    print(os.path.abspath(str(path)))
    return 0
