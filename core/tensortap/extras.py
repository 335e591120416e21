"""Optional packages tensortap uses and the extra that installs each: a missing one is named in
one line with the command that fixes it, never a bare ImportError traceback."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

#: top-level module -> (the package pip installs, the tensortap extra that brings it)
OPTIONAL: Dict[str, Tuple[str, str]] = {
    "matplotlib": ("matplotlib", "vis"),
    "PIL": ("pillow", "vis"),
    "sklearn": ("scikit-learn", "vis"),
    "s3fs": ("s3fs", "s3"),
}


def missing_extra(exc: Optional[BaseException]) -> Optional[str]:
    """One line naming the extra to install when `exc` is, or was caused by, the import of an
    optional package that is not installed (e.g. "matplotlib is not installed: pip install
    'tensortap[vis]'"); None for any other error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError):
            top = (exc.name or "").split(".")[0]
            if top in OPTIONAL:
                package, extra = OPTIONAL[top]
                return f"{package} is not installed: pip install 'tensortap[{extra}]'"
        exc = exc.__cause__ or exc.__context__
    return None
