"""What the process's machine and terminal allow, where a setting's null leaves it to them."""

from __future__ import annotations

import os
import sys


def usable_cpus() -> int:
    """The cores this process may run on (a cluster job's share, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def shows_progress_bar(setting: bool | None) -> bool:
    """`progress_bar`: as set, or (null) whether stderr is a terminal."""
    return sys.stderr.isatty() if setting is None else setting
