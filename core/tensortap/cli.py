"""The `tensortap` command. Each sub-command is a module in tensortap/commands/ with
`register(subparsers)`; its parser's `func(args) -> int` runs it."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import List, Optional

from . import commands
from ._version import __version__
from .errors import TensorTapError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensortap", description="Capture, check and see the tensors of a training run.")
    p.add_argument("--version", action="version", version=f"tensortap {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TensorTapError as e:
        print(f"tensortap: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # an optional package is missing: say which extra installs it
        from .extras import missing_extra

        hint = missing_extra(e)
        if hint is None:
            raise
        print(f"tensortap: error: {hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tensortap ls run | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
