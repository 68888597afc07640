"""Which code a benchmark figure was measured on: the commit, uncommitted changes, library versions.

Every script that writes a table the README quotes puts :func:`provenance` in the table's header, so a
figure can be traced to the exact code (``git show COMMIT``) and re-measured.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit(repo: Path = REPO) -> str:
    """``abc1234`` of HEAD, with ``+changes`` when files under onnxq/, models/ or benchmarks/ differ from it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "onnxq", "models", "benchmarks"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit (not a git checkout)"
    return f"{sha}+changes" if dirty else sha


def provenance() -> str:
    import onnx
    import onnxruntime

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"commit {commit()}, {stamp}; onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, "
            f"Python {platform.python_version()}")
