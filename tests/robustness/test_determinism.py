"""Determinism: the same model, data and options give byte-identical files, in one process and across
processes with different hash seeds (set and dict orders must never leak into the output)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import robust_models as rm
from helpers import REPO, save_random_arrays

from onnxq.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("det")
    model = folder / "m.onnx"
    onnx.save(rm.residual_concat_model(), str(model))
    return model, save_random_arrays(folder / "calib", 8, (3, 8, 8))


def _quantize(model: Path, calib: Path, out: Path, *options: str) -> bytes:
    assert main(["-q", "quantize", str(model), "-o", str(out), "--calib-data", str(calib), *options]) == 0
    return out.read_bytes()


@pytest.mark.parametrize("target", ["tensorrt", "ort-cpu"])
@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile", "mse"])
def test_same_inputs_give_identical_bytes(inputs, tmp_path: Path, target: str, method: str) -> None:
    model, calib = inputs
    options = ("--target", target, "--method", method)
    first = _quantize(model, calib, tmp_path / "a.onnx", *options)
    second = _quantize(model, calib, tmp_path / "b.onnx", *options)
    assert first == second
    ops = {n.op_type for n in onnx.load_from_string(first).graph.node}
    assert "DequantizeLinear" in ops  # a real quantized model, not two copies of nothing


def test_identical_across_processes_and_hash_seeds(inputs, tmp_path: Path) -> None:
    model, calib = inputs
    digests = []
    for seed in ("1", "2"):
        out = tmp_path / f"p{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxq",
                "-q",
                "quantize",
                str(model),
                "-o",
                str(out),
                "--calib-data",
                str(calib),
                "--method",
                "entropy",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    in_process = hashlib.sha256(
        _quantize(model, calib, tmp_path / "here.onnx", "--method", "entropy")
    ).hexdigest()
    assert digests[0] == digests[1] == in_process
