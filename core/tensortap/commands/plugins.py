"""`tensortap plugins [--json]`: every plugin, what it registers, and any load error."""
from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("plugins", help="list plugins, what they register, load errors, and missing frameworks")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..plugins import get_registry

    infos = get_registry().plugins
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=1))
        return 0
    for i in infos:
        kind = "built-in" if i.builtin else "plugin"
        print(f"{i.name}  [{kind}, {i.distribution} {i.version}]  {i.state}")
        for table, names in sorted(i.registers.items()):
            print(f"    {table}: {', '.join(names)}")
        for v in i.framework_versions():
            print(f"    supports: {describe(v)}")
        if i.error:
            print(f"    error: {i.error}")
    return 0


def describe(v: dict) -> str:
    """'torch >=2.1,<3 (installed 2.13.0: supported)', or what is wrong with the installed version."""
    ranges = v["supported"] + (f", needs {v['required']}" if v["required"] else "")
    ranges += ", optional" if v["optional"] else ""
    if v["installed"] is None:
        state = "not installed"
    elif not v["usable"]:
        state = f"installed {v['installed']}: CANNOT WORK with it"
    elif not v["in_range"]:
        state = f"installed {v['installed']}: NOT SUPPORTED, expect failures"
    else:
        state = f"installed {v['installed']}: supported"
    return f"{v['module']} {ranges} ({state})"
