"""The framework versions a plugin supports, and the check made when its adapter loads.

A framework plugin states its ranges once, as `SupportedVersions` constants it puts on its
`AdapterSpec(versions=...)`. `AdapterSpec.load()` and `load_explainer()` (first use of the
adapter, `hook.register`, or of its explainer, `tt.explain`; never at entry-point load, since the
core imports no framework) call
`check_versions`: a version outside `supported` gets one `FrameworkVersionWarning` per process
naming the installed version, the range and the fix; outside `required` (where the plugin cannot
work at all) a ConfigError; inside, nothing. `tensortap plugins` shows the same ranges, reading
installed versions from package metadata without importing the frameworks.

Versions are compared by their release numbers only (a small subset of PEP 440, so the core
needs no `packaging`): "2.13.0+cpu" is 2.13.0, and a pre-release such as "3.0.0rc1" counts as
the release it precedes (3.0.0).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import re
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from .errors import ConfigError

_OPERATORS = (">=", "<=", "==", "!=", ">", "<")  # two-character operators first
_RELEASE = re.compile(r"\s*v?(\d+(?:\.\d+)*)")

Clause = Tuple[str, Tuple[int, ...]]


class FrameworkVersionWarning(UserWarning):
    """An installed framework version is outside the range its tensortap plugin supports."""


def release(version: str) -> Tuple[int, ...]:
    """The release numbers of a version: "2.13.0+cpu" -> (2, 13, 0), "2.18.0rc1" -> (2, 18, 0)."""
    m = _RELEASE.match(version)
    if m is None:
        raise ValueError(f"not a version number: {version!r}")
    return tuple(int(p) for p in m.group(1).split("."))


def parse_specifier(spec: str) -> List[Clause]:
    """">=2.1,<3" -> [(">=", (2, 1)), ("<", (3,))]; ValueError naming what is wrong."""
    clauses: List[Clause] = []
    for part in spec.split(","):
        part = part.strip()
        op = next((o for o in _OPERATORS if part.startswith(o)), None)
        rest = part[len(op):].strip() if op else ""
        if op is None or not re.fullmatch(r"\d+(\.\d+)*", rest):
            raise ValueError(f"{part!r} in {spec!r} is not one of >=, <=, ==, !=, >, < followed by "
                             "release numbers (e.g. '>=2.1,<3')")
        clauses.append((op, release(rest)))
    return clauses


def _compare(a: Tuple[int, ...], b: Tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def contains(spec: str, version: str) -> bool:
    """Does `version` satisfy every clause of `spec`? (An empty spec allows every version.)"""
    if not spec.strip():
        return True
    v = release(version)
    tests = {">=": lambda c: c >= 0, "<=": lambda c: c <= 0, "==": lambda c: c == 0,
             "!=": lambda c: c != 0, ">": lambda c: c > 0, "<": lambda c: c < 0}
    return all(tests[op](_compare(v, bound)) for op, bound in parse_specifier(spec))


@dataclass(frozen=True)
class SupportedVersions:
    """The versions of one framework (an importable module) a plugin works with.

    module:    the import name whose `__version__` is checked ("torch")
    supported: the versions the plugin is written and tested for (">=2.1,<3"): outside them
               tensortap warns once (FrameworkVersionWarning) and goes on
    required:  the versions outside which the plugin cannot work ("" = no such bound): a ConfigError
    package:   what `pip install` calls it (default: module), for the messages
    optional:  checked only when the user's code has imported it (gluonnlp, for BERT attention)
    """

    module: str
    supported: str
    required: str = ""
    package: str = ""
    optional: bool = False

    def __post_init__(self) -> None:
        for field_name in ("supported", "required"):
            try:
                parse_specifier(getattr(self, field_name)) if getattr(self, field_name) else None
            except ValueError as e:
                raise ConfigError(f"SupportedVersions({self.module!r}): {field_name}: {e}") from None
        if not self.supported:
            raise ConfigError(f"SupportedVersions({self.module!r}): `supported` is empty; give a range "
                              "such as '>=2.1,<3'")

    @property
    def pip_name(self) -> str:
        return self.package or self.module

    def problem(self, installed: str) -> Optional[Tuple[bool, str]]:
        """(fatal, what is wrong) for an installed version outside the ranges, else None."""
        if self.required and not contains(self.required, installed):
            return True, (f"needs {self.module} {self.required}, but {self.module} {installed} is installed")
        if not contains(self.supported, installed):
            return False, (f"supports {self.module} {self.supported}, but {self.module} {installed} is installed")
        return None

    def status(self) -> Dict[str, object]:
        """What `tensortap plugins` shows, without importing the framework: the ranges, the installed
        version (None if not installed) and whether it is supported (None if not installed)."""
        installed = installed_version(self.module, self.pip_name)
        try:
            found = self.problem(installed) if installed is not None else None
        except ValueError:  # a version string we cannot read
            found = None
        return {"module": self.module, "supported": self.supported, "required": self.required,
                "optional": self.optional, "installed": installed,
                "in_range": None if installed is None else found is None,
                "usable": None if installed is None else not (found and found[0])}


def installed_version(module: str, package: str) -> Optional[str]:
    """The installed version of the distribution that provides `module` (e.g. tensorflow-cpu for
    "tensorflow"), from package metadata: nothing is imported. None if none provides it."""
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        pass
    for dist in md.distributions():  # another distribution may provide it (tensorflow-cpu, mxnet-cu112)
        top = dist.read_text("top_level.txt") or ""
        if module in top.split():
            return dist.version
    return None


def _distribution_of(owner: str) -> str:
    """The distribution whose `tensortap` entry point lives in the owner's top-level package
    ("tensortap_torch.adapter:TorchAdapter" -> "tensortap-torch 0.1.0"), for the messages."""
    top = owner.split(":")[0].split(".")[0]
    if sys.version_info >= (3, 10):
        eps: Sequence[md.EntryPoint] = tuple(md.entry_points(group="tensortap"))
    else:  # Python < 3.10: name the package instead
        eps = ()
    for ep in eps:
        dist = getattr(ep, "dist", None)
        if dist is not None and ep.value.split(":")[0].split(".")[0] == top:
            return f"{dist.metadata['Name']} {dist.version}"
    return top.replace("_", "-")


_warned: Set[Tuple[str, str, str]] = set()
_warned_lock = threading.Lock()


def check_versions(versions: Sequence[SupportedVersions], owner: str) -> None:
    """Compare each framework's `__version__` with the plugin's ranges, importing the framework
    (call it only where the plugin loads its framework anyway; `owner` is one of the plugin's
    modules, e.g. its adapter path, and names it in the messages). Outside `required`:
    ConfigError; outside `supported`: one FrameworkVersionWarning per process and version;
    inside: nothing."""
    for v in versions:
        if v.optional and v.module not in sys.modules:
            continue
        installed = getattr(importlib.import_module(v.module), "__version__", None)
        if not isinstance(installed, str):
            continue
        try:
            found = v.problem(installed)
        except ValueError:  # a version string we cannot read: nothing to compare
            continue
        if found is None:
            continue
        fatal, what = found
        plugin = _distribution_of(owner)
        fix = f"pip install '{v.pip_name}{v.supported}'"
        if fatal:
            raise ConfigError(f"{plugin} cannot work here: it {what}. Install a supported version: {fix}")
        key = (v.module, installed, v.supported)
        with _warned_lock:
            if key in _warned:
                continue
            _warned.add(key)
        warnings.warn(
            f"{plugin} {what}: capture may fail or be wrong. Install a supported version ({fix}) or a "
            f"{plugin.split(' ')[0]} release that supports {v.module} {installed}. (Shown once; silence it with "
            "warnings.filterwarnings('ignore', category=tensortap.FrameworkVersionWarning).)",
            FrameworkVersionWarning, stacklevel=4)  # the caller of hook.register
