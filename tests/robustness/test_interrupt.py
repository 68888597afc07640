"""Ctrl-C during calibration: exit code 130, one line on stderr, and nothing written (no file, no temp dir).

The CLI runs in a real subprocess on a pseudo-terminal, as a user's shell would run it, so the progress
bar is on and tells the test when calibration has started; the SIGINT then lands in the middle of it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import onnx
import pytest
import robust_models as rm
from helpers import REPO

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal and SIGINT")


def _read_until(fd: int, proc: subprocess.Popen, needle: bytes, timeout: float) -> bytes:
    """Read the terminal until ``needle`` appears (or the process exits, or time runs out)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen


def _drain(fd: int) -> bytes:
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            return out
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return out
        if not chunk:
            return out
        out += chunk


SCRIPT = """
import itertools
import numpy as np

def load_data():
    rng = np.random.default_rng(0)
    for i in itertools.count():
        yield {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
"""


@pytest.mark.parametrize("source", ["random", "script"])
def test_sigint_during_calibration_leaves_nothing(tmp_path: Path, source: str) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    model = inp / "m.onnx"
    onnx.save(rm.if_model(), str(model))  # an internal tensor to expose, so onnxruntime runs every batch
    if source == "random":
        data = ["--random", "100000", "--method", "entropy"]
    else:
        (inp / "loader.py").write_text(SCRIPT)
        data = ["--calib-script", str(inp / "loader.py")]
    before = rm.snapshot(inp)
    master, slave = pty.openpty()
    fcntl.ioctl(
        slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0)
    )  # tqdm draws nothing at width 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "onnxq", "quantize", str(model), "-o", str(out / "q.onnx"), *data],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=str(tmp_path),
        close_fds=True,
    )
    os.close(slave)
    try:
        seen = _read_until(master, proc, b"calibrating", timeout=60)
        assert proc.poll() is None, (
            f"finished before it could be interrupted: {seen.decode(errors='replace')}"
        )
        assert b"calibrating" in seen
        time.sleep(0.3)  # well inside the 100000-sample calibration
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        text = (seen + _drain(master)).decode(errors="replace").replace("\r", "\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert code == 130, text
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("onnxq:")]
    assert lines == ["onnxq: interrupted; no output was written"], text
    assert list(out.iterdir()) == [], "an interrupted run left files in the output folder"
    assert rm.snapshot(inp) == before
