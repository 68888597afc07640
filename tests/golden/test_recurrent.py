"""Golden cases for recurrent layers: per target, what happens to LSTM, GRU and RNN and why, and that the
MatMul feeding them is quantized as usual; the ort-cpu LSTM is written as DynamicQuantizeLSTM and run."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import ort_run, ref_sqnr_db
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import onnxq
from onnxq.config import QuantConfig
from onnxq.placement import plan
from onnxq.preprocess import preprocess

RNG = np.random.default_rng(1)
H, K = 8, 6


def _w(name, shape, scale=0.4):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def recurrent_model() -> onnx.ModelProto:
    """x -> MatMul -> {LSTM (bidirectional), GRU, RNN}."""
    nodes = [helper.make_node("MatMul", ["x", "P"], ["p"], name="proj"),
             helper.make_node("LSTM", ["p", "LW", "LR", "LB"], ["l"], name="lstm", hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("GRU", ["p", "GW", "GR"], ["g"], name="gru", hidden_size=H, linear_before_reset=1),
             helper.make_node("RNN", ["p", "RW", "RR"], ["r"], name="rnn", hidden_size=H)]
    inits = [_w("P", (5, K)), _w("LW", (2, 4 * H, K)), _w("LR", (2, 4 * H, H)), _w("LB", (2, 8 * H), 0.1),
             _w("GW", (1, 3 * H, K)), _w("GR", (1, 3 * H, H)), _w("RW", (1, H, K)), _w("RR", (1, H, H))]
    outs = [helper.make_tensor_value_info(n, TP.FLOAT, None) for n in ("l", "g", "r")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [7, 1, 5])], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _plan(target: str):
    pre, _ = preprocess(recurrent_model())
    return plan(pre, QuantConfig(target=target))


def test_tensorrt_keeps_every_recurrent_op_float_citing_the_parser_and_quantizes_the_matmul():
    p = _plan("tensorrt")
    skips = {s.node: s for s in p.skips}
    for node, op in (("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "RNN")):
        assert skips[node].rule == "recurrent"
        assert f"imports {op} with FP32/FP16/BF16 only" in skips[node].reason and "onnx-tensorrt" in skips[node].reason
    assert "proj" in p.quantized_nodes and p.spec_for("p") is None  # no Q/DQ on the recurrent inputs
    assert {s.tensor for s in p.weights()} == {"P"}


def test_ort_cpu_runs_lstm_with_its_dynamic_kernel_and_keeps_gru_rnn_float():
    p = _plan("ort-cpu")
    skips = {s.node: s for s in p.skips}
    assert "lstm" in p.quantized_nodes and "lstm" not in skips
    for node in ("gru", "rnn"):
        assert skips[node].rule == "recurrent" and "no integer" in skips[node].reason
    assert "proj" in p.quantized_nodes


def test_ort_cpu_static_model_writes_dynamic_quantize_lstm_close_to_float():
    model = recurrent_model()
    feeds = [{"x": RNG.standard_normal((7, 1, 5)).astype(np.float32)} for _ in range(4)]
    result = onnxq.quantize(model, feeds, QuantConfig(target="ort-cpu", activations={"method": "minmax"}))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 1 and "LSTM" not in ops and "GRU" in ops and "RNN" in ops
    x = RNG.standard_normal((7, 1, 5)).astype(np.float32)
    assert ref_sqnr_db(ort_run(model, {"x": x}), ort_run(result.model, {"x": x})) > 20
