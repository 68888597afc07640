"""A model above the 2 GB protobuf limit, stored with external data: quantized end to end, nothing lost.

Slow and heavy (measured on the 2-core dev machine: 12.5 minutes, 17 GB peak resident memory, several
2.2 GB copies written to temporary folders), so it is marked ``huge`` and excluded from the default run (and CI);
run it with ``pytest -m huge tests/robustness/test_large_model.py`` on a machine with 24 GB of memory or more.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.cli import main

K, N = 16384, 17000  # two float32 weights of K*N*4 = 1.11 GB each: 2.23 GB in all, over 2**31 - 1 bytes


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _build(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((K, N), dtype=np.float32) / np.sqrt(K)).astype(np.float32)
    w2 = (rng.standard_normal((N, K), dtype=np.float32) / np.sqrt(N)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2"),
        ],
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, K])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    del w1, w2
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "large.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="large.onnx.data")
    return path


@pytest.mark.huge
def test_model_over_2gb_with_external_data(tmp_path: Path, monkeypatch) -> None:
    inp, out, scratch = tmp_path / "in", tmp_path / "out", tmp_path / "scratch"
    for folder in (inp, out, scratch):
        folder.mkdir()
    monkeypatch.setattr(
        tempfile, "tempdir", str(scratch)
    )  # onnxq's temporary copies land here, to be counted
    model = _build(inp)
    assert (inp / "large.onnx.data").stat().st_size > 2**31
    before = {p.name: _digest(p) for p in inp.iterdir()}
    q = out / "large.int8.onnx"
    code = main(["-q", "quantize", str(model), "-o", str(q), "--random", "2"])
    assert code == 0
    assert {p.name: _digest(p) for p in inp.iterdir()} == before, "an input file changed"
    assert sorted(p.name for p in out.iterdir()) == ["large.int8.onnx", "large.int8.onnx.data"]
    assert q.stat().st_size < 2**20  # the weights are in the .data file, not in the protobuf
    onnx.checker.check_model(str(q), full_check=True)
    header = onnx.load_model(str(q), load_external_data=False)
    assert [n.op_type for n in header.graph.node].count("DequantizeLinear") >= 4
    x = (
        np.random.default_rng(1).uniform(0, 1, (1, K)).astype(np.float32)
    )  # the distribution --random calibrated on
    got = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    cos = float(np.dot(got.ravel(), want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.99, cos
    assert list(scratch.iterdir()) == [], "validation left temporary copies of the model behind"
