"""The real command in a real process: an error is exactly one stderr line and exit code 2.

The in-process corpus cannot see what C++ libraries print straight to file descriptor 2 (onnxruntime's
own error log lines) nor what logging prints once configured; a child process shows all of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import robust_models as rm
from helpers import REPO


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "onnxq", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _truncated(folder: Path) -> list[str]:
    data = rm.conv_model().SerializeToString()
    (folder / "m.onnx").write_bytes(data[: len(data) // 2])
    return ["quantize", "m.onnx", "-o", "out/q.onnx", "--random", "2"]


def _runtime_failure(folder: Path) -> list[str]:
    """Token ids beyond the embedding table: onnxruntime fails inside Gather while calibrating. (Given as
    data: --random draws ids the table holds.)"""
    onnx.save(rm.embedding_model(vocab=16), str(folder / "m.onnx"))
    (folder / "calib").mkdir()
    np.save(folder / "calib" / "000.npy", np.full(5, 99, np.int64))
    return ["quantize", "m.onnx", "-o", "out/q.onnx", "--calib-data", "calib"]


def _nan_data(folder: Path) -> list[str]:
    onnx.save(rm.conv_model(), str(folder / "m.onnx"))
    (folder / "calib").mkdir()
    x = np.ones((3, 8, 8), np.float32)
    x[0, 0, 0] = np.nan
    np.save(folder / "calib" / "000.npy", x)
    return ["quantize", "m.onnx", "-o", "out/q.onnx", "--calib-data", "calib"]


@pytest.mark.parametrize(
    "setup, says",
    [
        (_truncated, "not an onnx model"),
        (_runtime_failure, "onnxruntime failed to run the model"),
        (_nan_data, "nan or inf"),
    ],
    ids=["truncated-model", "onnxruntime-error", "nan-data"],
)
def test_one_line_and_exit_code_2(tmp_path: Path, setup, says: str) -> None:
    (tmp_path / "out").mkdir()
    proc = _run(*setup(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("onnxq: error: ") and says in lines[0].lower()
    assert proc.stdout == ""
    assert list((tmp_path / "out").iterdir()) == []


def test_closed_stdout_pipe_is_not_an_error(tmp_path: Path) -> None:
    """`onnxq inspect m.onnx --format json | head -c 100`: the reader stops early; exit 0, no traceback."""
    onnx.save(rm.conv_model(), str(tmp_path / "m.onnx"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "onnxq", "inspect", "m.onnx", "--format", "json"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(20)  # the start of the plan, then the pipe closes
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Error" not in err and "Traceback" not in err
