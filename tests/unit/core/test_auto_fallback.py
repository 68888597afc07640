"""quantize's default (--method auto): a poor held-out result leaves the layers that lose it in float, within
a cap, and says so; max_float_layers=0 keeps every layer quantized and only warns."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxq import api, runtime
from onnxq.analysis.auto import poor_outputs

RNG = np.random.default_rng(0)


def _model() -> onnx.ModelProto:
    """h = X @ W1 (4 channels ~100, 4 channels ~0.01); Y = h @ W2 reads only the small channels, Z = h @ W3
    only the big ones. Per-tensor int8 on h (both MatMuls' input) rounds the small channels to nothing, so Y
    comes out at ~0 dB SQNR; left in float, mm2 reads h unquantized."""
    w1 = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    w1[:, :4] *= 100.0
    w1[:, 4:] *= 0.01
    pick = np.eye(8, dtype=np.float32)
    w2, w3 = pick[:, 4:].copy(), pick[:, :4].copy()
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "W2"], ["Y"], name="mm2"),
             helper.make_node("MatMul", ["h", "W3"], ["Z"], name="mm3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["n", 4])],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2"),
                               numpy_helper.from_array(w3, "W3")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


FEEDS = [{"X": RNG.standard_normal((4, 8)).astype(np.float32)} for _ in range(48)]  # 9 held out


def _y_sqnr(model: onnx.ModelProto, quantized: onnx.ModelProto) -> float:
    """Y's SQNR (dB) of ``quantized`` against ``model`` on every feed, from an independent run."""
    ref = np.concatenate([runtime.run(runtime.make_session(model), f)[0] for f in FEEDS])
    out = np.concatenate([runtime.run(runtime.make_session(quantized), f)[0] for f in FEEDS])
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))


def test_poor_result_leaves_the_guilty_layer_in_float(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="onnxq.api"):
        result = api.quantize(_model(), FEEDS)
    assert poor_outputs(result.report.choice)  # the search alone cannot save the small channels
    fallback = result.report.fallback
    assert fallback is not None and fallback.float_nodes == ("mm2",) and fallback.verified_met
    assert "mm2" not in result.report.quantized_nodes and {"mm1", "mm3"} <= set(result.report.quantized_nodes)
    assert _y_sqnr(_model(), result.model) > 30.0
    assert any("kept 1 layers in float (mm2)" in r.getMessage() for r in caplog.records)


def test_zero_cap_keeps_every_layer_quantized_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="onnxq.api"):
        result = api.quantize(_model(), FEEDS, max_float_layers=0)
    assert result.report.fallback is None
    assert {"mm1", "mm2", "mm3"} <= set(result.report.quantized_nodes)
    assert _y_sqnr(_model(), result.model) < 10.0
    assert any("far from float" in r.getMessage() for r in caplog.records)


def test_too_few_held_out_feeds_only_warn(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="onnxq.api"):
        result = api.quantize(_model(), FEEDS[:16])  # 3 held out: a slice SQNR on them says little
    assert poor_outputs(result.report.choice) and result.report.fallback is None
    assert any("too few held-out feeds" in r.getMessage() for r in caplog.records)
