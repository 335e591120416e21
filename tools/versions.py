"""One version for every distribution in this repository, and the core versions each plugin states.

The core's `tensortap/_version.py` is the version; each plugin and contrib distribution reads its
own from its package's `__init__.py` (hatch's version source, named in its pyproject.toml) and must
equal it. A distribution that depends on another of this repository pins it to the releases it was
made with: `tensortap>=X.Y.Z,<X.(Y+1)` while the major version is 0 (the seam may change between
minors), `<(X+1)` from 1.0 on.

    python tools/versions.py               # print the version; exit 1 naming any drift
    python tools/versions.py --set 0.2.0   # move every distribution (and every pin) to 0.2.0
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List

try:
    import tomllib
except ImportError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
_VERSION_LINE = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.M)


def distributions(root: Path = ROOT) -> List[Path]:
    """The folder of every distribution: core first, then plugins/*, contrib/*."""
    found = [root / "core"] + sorted((root / "plugins").glob("*")) + sorted((root / "contrib").glob("*"))
    return [d for d in found if (d / "pyproject.toml").is_file()]


def pyproject(dist: Path) -> dict:
    return tomllib.loads((dist / "pyproject.toml").read_text())


def version_file(dist: Path) -> Path:
    """The file hatch reads the distribution's version from ([tool.hatch.version] path)."""
    return dist / pyproject(dist)["tool"]["hatch"]["version"]["path"]


def read_version(dist: Path) -> str:
    m = _VERSION_LINE.search(version_file(dist).read_text())
    if m is None:
        raise ValueError(f"{version_file(dist)} has no line __version__ = \"...\"")
    return m.group(1)


def pin(version: str) -> str:
    """The specifier a distribution here uses for a sibling released at `version`."""
    major, minor = (int(p) for p in re.match(r"(\d+)\.(\d+)", version).groups())  # type: ignore[union-attr]
    return f">={version},<{f'0.{minor + 1}' if major == 0 else major + 1}"


def _requirements(project: dict) -> List[str]:
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return reqs


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")  # type: ignore[union-attr]


def drift(root: Path = ROOT) -> List[str]:
    """Every way the distributions' versions or sibling pins disagree (empty: they move together)."""
    dists = distributions(root)
    names: Dict[str, Path] = {pyproject(d)["project"]["name"]: d for d in dists}
    version = read_version(root / "core")
    expected = pin(version)
    problems: List[str] = []
    for name, dist in names.items():
        project = pyproject(dist)["project"]
        rel = dist.relative_to(root)
        if "version" in project or "version" not in project.get("dynamic", []):
            problems.append(f"{rel}/pyproject.toml: the version must be dynamic (read from {version_file(dist).name})")
        own = read_version(dist)
        if own != version:
            problems.append(f"{version_file(dist).relative_to(root)}: {name} {own}, but tensortap is {version}")
        for req in _requirements(project):
            if _name(req) in names and req != f"{_name(req)}{expected}":
                problems.append(f"{rel}/pyproject.toml: {req!r} should be '{_name(req)}{expected}'")
    return problems


def set_version(new: str, root: Path = ROOT) -> None:
    """Write `new` into every version file and every sibling pin."""
    dists = distributions(root)
    names = [pyproject(d)["project"]["name"] for d in dists]
    for dist in dists:
        vf = version_file(dist)
        vf.write_text(_VERSION_LINE.sub(f'__version__ = "{new}"', vf.read_text(), count=1))
        toml = dist / "pyproject.toml"
        text = toml.read_text()
        for name in names:
            text = re.sub(rf'"{re.escape(name)}(?:[<>=!~][^"]*)?"', f'"{name}{pin(new)}"', text)
        toml.write_text(text)


def report(problems: List[str], summary: str, ok: str) -> int:
    """Print each problem to stderr and a one-line summary; the exit status (1 if any problem)."""
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{summary}: " + (ok if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", metavar="VERSION", help="move every distribution to VERSION")
    args = ap.parse_args(argv)
    if args.set:
        if not re.fullmatch(r"\d+\.\d+\.\d+\S*", args.set):
            ap.error(f"{args.set!r} is not a version like 0.2.0")
        set_version(args.set)
    return report(drift(), f"tensortap {read_version(ROOT / 'core')}, {len(distributions())} distributions",
                  "versions and pins agree")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
