"""`python -m tensortap.zerocode.prepare CONFIG [OUT]`: check a configuration for a run and print
what the processes of the run need (JSON: the modules to watch, the run directory); on a bad
configuration print the error and exit 2. The boot module runs it before a script started with
TENSORTAP_CONFIG alone, so the script never starts on a bad file."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

from ..errors import ConfigError


def watch_list(framework: Optional[str] = None) -> List[str]:
    """Top-level modules whose import starts an instrumentation (every plugin's model_modules)."""
    from ..plugins import get_registry

    out: List[str] = []
    for spec in get_registry().adapters.values():
        if spec.instrument and framework in (None, spec.name):
            out += [m for m in spec.model_modules if m not in out]
    return out


def prepare(config_path: str, out_dir: Optional[str] = None, default_out: Optional[str] = None) -> Dict[str, Any]:
    """Load and check the configuration; the run directory (`out_dir`, else the configuration's,
    else `default_out`) must be known and must not hold a run."""
    from .config import load

    cfg = load(config_path)
    out = out_dir or cfg.out_dir or default_out
    if not out:
        raise ConfigError(f'{config_path}: out_dir is not set; add out_dir = "runs/name" to it (or run the script '
                          "with `tensortap run --out DIR`)")
    check_out_dir(out)
    return {"watch": watch_list(cfg.framework), "out_dir": out, "config": cfg}


def check_out_dir(out: str) -> None:
    """A run directory that already holds a run is refused before the script starts."""
    from ..store import layout
    from ..store.fs import join, resolve

    fs, root = resolve(out)
    if fs.exists(join(root, layout.RUN_MARKER)) or fs.exists(join(root, layout.WORKERS_DIR)):
        raise ConfigError(f"{out} already holds a run; give each run a new directory (`tensortap run --out DIR` "
                          "or out_dir in the configuration), or delete the old one")


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m tensortap.zerocode.prepare CONFIG [OUT]", file=sys.stderr)
        return 2
    try:
        info = prepare(args[0], args[1] if len(args) > 1 else None)
    except ConfigError as e:
        print(f"tensortap: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"watch": info["watch"], "out_dir": info["out_dir"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
