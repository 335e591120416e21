"""One file-system seam for local paths and fsspec URLs (s3://, memory://, ...)."""
from __future__ import annotations

import os
from typing import Tuple

import fsspec
from fsspec.implementations.local import LocalFileSystem


def resolve(out_dir) -> Tuple["fsspec.AbstractFileSystem", str]:
    """(filesystem, root path) for a local path or any fsspec URL."""
    text = os.fspath(out_dir)
    if "://" not in text:
        return LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    fs, path = fsspec.core.url_to_fs(text)
    return fs, path.rstrip("/")


def is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])
