"""Build every distribution's sdist and wheel, then check them as a user's pip would meet them.

Builds offline with the venv's own hatchling (`python -m build --no-isolation`: the sdist, then
the wheel from the unpacked sdist, so a file missing from the sdist fails the wheel too), runs
`twine check --strict`, and opens each wheel: its package, py.typed, README (the METADATA
description), LICENSE (equal to the repository's) and entry points must be there, and the
versions and sibling pins must agree (tools/versions.py).

    python tools/dist.py                   # every distribution into dist/ (`make dist`)
    python tools/dist.py --outdir D DIR..  # only these distribution folders
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from versions import ROOT, distributions, drift, pyproject, report  # noqa: E402


def build(dist: Path, outdir: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(dist)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"building {dist} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")


def wheel_of(dist: Path, outdir: Path) -> Optional[Path]:
    project = pyproject(dist)["project"]
    stem = project["name"].replace("-", "_")
    found = sorted(outdir.glob(f"{stem}-*.whl"))
    return found[-1] if found else None


def inspect_wheel(dist: Path, wheel: Path) -> List[str]:
    """What is missing or wrong in the wheel built from `dist` (empty: all there)."""
    meta = pyproject(dist)
    project, problems = meta["project"], []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next((n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA")), None)
        if info is None:
            return [f"{wheel.name}: no METADATA"]
        for pkg in meta["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
            for f in ("__init__.py", "py.typed"):
                if f"{pkg}/{f}" not in names:
                    problems.append(f"{wheel.name}: {pkg}/{f} missing")
        lic = f"{info}/licenses/LICENSE"
        if lic not in names:
            problems.append(f"{wheel.name}: {lic} missing")
        elif z.read(lic) != (ROOT / "LICENSE").read_bytes():
            problems.append(f"{wheel.name}: its LICENSE differs from the repository's LICENSE")
        md = Parser().parsestr(z.read(f"{info}/METADATA").decode())
        readme = (dist / project.get("readme", "README.md")).read_text()
        if md.get("Description-Content-Type") != "text/markdown" or md.get_payload().strip() != readme.strip():
            problems.append(f"{wheel.name}: METADATA does not carry {dist.name}/README.md as its markdown description")
        for field in ("License-Expression", "Author", "Project-URL", "Classifier", "Requires-Python"):
            if not md.get_all(field):
                problems.append(f"{wheel.name}: METADATA has no {field}")
        eps: Dict[str, Dict[str, str]] = {**{g: dict(v) for g, v in project.get("entry-points", {}).items()}}
        if project.get("scripts"):
            eps["console_scripts"] = dict(project["scripts"])
        text = z.read(f"{info}/entry_points.txt").decode() if f"{info}/entry_points.txt" in names else ""
        for group, items in eps.items():
            for name, value in items.items():
                if f"{name} = {value}" not in text.split(f"[{group}]", 1)[-1].split("\n[", 1)[0]:
                    problems.append(f"{wheel.name}: entry point [{group}] {name} = {value} missing")
    return problems


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outdir", default=str(ROOT / "dist"))
    ap.add_argument("dists", nargs="*", help="distribution folders (default: all of this repository's)")
    args = ap.parse_args(argv)
    outdir = Path(args.outdir).resolve()
    dists = [Path(d).resolve() for d in args.dists] or distributions()
    outdir.mkdir(parents=True, exist_ok=True)
    for dist in dists:  # stale files of an earlier version would be checked (and uploaded) too
        stem = pyproject(dist)["project"]["name"].replace("-", "_")
        for old in [*outdir.glob(f"{stem}-*.whl"), *outdir.glob(f"{stem}-*.tar.gz")]:
            old.unlink()
    problems = [] if args.dists else drift()
    for dist in dists:
        build(dist, outdir)
        wheel = wheel_of(dist, outdir)
        problems += inspect_wheel(dist, wheel) if wheel else [f"{dist}: no wheel was built"]
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(
        [*outdir.glob("*.whl"), *outdir.glob("*.tar.gz")]))],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"twine check failed:\n{r.stdout}{r.stderr}")
    return report(problems, f"{len(dists)} distributions built into {outdir}", "sdists and wheels checked")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
