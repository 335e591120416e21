"""Zero code change: `tensortap run -- python train.py` (or TENSORTAP_CONFIG=path) attaches a hook,
built from a configuration file, to a training script nobody edited.

- config.py: the configuration file (TOML / JSON / YAML, or smdebug's JSON hook configuration);
- boot.py + site/: the start-up of every process of the run (standard library only);
- session.py: one process's run session, and the Instrumentation base framework plugins implement;
- report.py: the summary `tensortap run` prints at the end; prepare.py: checks a configuration.
"""
from __future__ import annotations

from typing import Any, Optional


def active_hook() -> Optional[Any]:
    """The hook `tensortap run` attached in this process, or None (not under `tensortap run`,
    nothing instrumented yet, or a DataLoader worker, which never gets one)."""
    from .session import active_hook as _active

    return _active()


__all__ = ["active_hook"]
