"""How many cores this process may use: the one answer every thread pool in onnxq sizes itself by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's affinity mask (containers and taskset limit it), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
