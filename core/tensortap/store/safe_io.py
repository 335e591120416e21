"""Opening files of a run that may come from a stranger: only regular files inside the run are
opened (a FIFO, a device or a symlink leading out of the run is refused without reading it),
small JSON files are read up to a size cap and parsed with a depth cap."""
from __future__ import annotations

import io
import json
import os
import stat
from typing import Any, Union
from ..errors import CorruptRunError
from .fs import FileSystem

#: the most any small JSON file of a run (meta.json, the run marker, the writer claim) may hold
MAX_JSON_BYTES = 1 << 20
#: the deepest nesting accepted in such a file (the writer's are 3 levels deep)
MAX_JSON_DEPTH = 32

_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symlink"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "special file")


def inside(root_real: str, path: str) -> str:
    """The real path of `path`, which must lie inside the run whose real root is `root_real`."""
    real = os.path.realpath(path)
    if real != root_real and not real.startswith(root_real.rstrip(os.sep) + os.sep):
        raise CorruptRunError(f"{path} leads out of the run (to {real}); refusing to open it. "
                              "A run holds only its own regular files: replace the link with the file")
    return real


def open_regular(root_real: str, path: str) -> io.FileIO:
    """An unbuffered binary file object for reading `path`, refused (CorruptRunError) unless it is
    a regular file inside the run. FileNotFoundError passes through (the caller names what is
    missing). A FIFO or device is never opened: its type is checked first, then checked again
    on the descriptor, which is opened non-blocking so even a swapped-in FIFO cannot hang."""
    real = inside(root_real, path)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise CorruptRunError(f"{path} is a {_kind(st.st_mode)}, not a regular file; refusing to open it "
                              "(a tensortap run holds only regular files: remove it)")
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise CorruptRunError(f"{path} changed into a {_kind(st2.st_mode)} while being opened; refusing it")
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def read_small(fs: FileSystem, local: bool, root_real: str, path: str, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a small file of the run (at most `limit`; a bigger one is refused). `root_real`:
    the run's real path (local runs)."""
    raw: bytes
    if local:
        with open_regular(root_real, path) as f:
            raw = f.read(limit + 1)
    else:
        raw = fs.cat_file(path, start=0, end=limit + 1)
    if len(raw) > limit:
        raise CorruptRunError(f"{path} is larger than {limit} bytes: not a file tensortap wrote; refusing to read it")
    return raw


def depth_ok(obj: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Is `obj` (parsed JSON) nested at most `limit` levels deep?"""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            if d > limit:
                return False
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return True


def loads(raw: Union[str, bytes], what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads that raises ValueError (never RecursionError) for nesting beyond `max_depth`."""
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    if not depth_ok(obj, max_depth):
        raise ValueError(f"{what} is nested more than {max_depth} levels deep")
    return obj
