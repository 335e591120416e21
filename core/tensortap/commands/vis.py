"""`tensortap vis NAME RUN --out FILE [--opt k=v ...]`: render one visualizer (`tensortap vis list`)."""
from __future__ import annotations

import os
from typing import Dict, List

from ..errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("vis", help="render a visualizer of a run to a file (`tensortap vis list` lists them)",
                       description="Render visualizer NAME for RUN into --out (PNG, GIF or HTML by extension). "
                                   "Several RUNs overlay where the visualizer supports it (scalars).")
    p.add_argument("name", help="visualizer name, or `list`")
    p.add_argument("run", nargs="*", help="run directory or fsspec URL (several for scalars)")
    p.add_argument("--out", "-o", help="output file; its extension picks the format (default NAME + suffix)")
    p.add_argument("--opt", action="append", default=[], metavar="K=V", help="visualizer option (repeatable)")
    p.set_defaults(func=run)


def parse_options(cls, pairs: List[str]) -> Dict[str, object]:
    """--opt k=v strings to typed keyword arguments of `cls.render` (a clear error for unknown ones)."""
    from ..vis._common import coerce_option

    known = cls.options()
    out: Dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--opt expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        k = k.strip().replace("-", "_")
        cls.check_options({k: None})
        try:
            out[k] = coerce_option(v, known.get(k))
        except ConfigError as e:
            raise ConfigError(f"option {k!r} of visualizer {cls.name!r}: {e}") from None
    return out


def _list() -> int:
    from .. import vis

    for name in vis.list():
        cls = vis.get(name)
        fmts = ", ".join((cls.suffix,) + tuple(getattr(cls, "suffixes", ())))
        print(f"{name:14s} [{fmts}]  {' '.join(cls.describe().split())}")
        opts = cls.options()
        if opts:
            print(" " * 16 + "options: " + ", ".join(f"{k}={v!r}" for k, v in opts.items()))
    return 0


def run(args) -> int:
    from .. import vis
    from ..trial import create_trial

    if args.name == "list" and not args.run:
        return _list()
    if not args.run:
        raise ConfigError(f"give the run to draw: tensortap vis {args.name} RUN --out FILE")
    cls = vis.get(args.name)
    opts = parse_options(cls, args.opt)
    trials = [create_trial(r) for r in args.run]
    target = trials if len(trials) > 1 else trials[0]
    if len(trials) > 1 and args.name != "scalars":
        raise ConfigError(f"visualizer {args.name!r} draws one run; several runs overlay only in `scalars`")
    out = args.out or f"{args.name}{cls.suffix}"
    path = cls().render(target, out, **opts)
    print(os.path.abspath(str(path)))
    return 0
