"""Dynamic quantization (``mode="dynamic"``): the written kernels checked against numpy references of
their arithmetic, run by onnxruntime; LSTM against the float LSTM; what stays float and why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import ort_run, ref_sqnr_db
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import onnxq
from onnxq.config import QuantConfig

RNG = np.random.default_rng(0)
DYNAMIC = QuantConfig(target="ort-cpu", mode="dynamic", weights={"reduce_range": False})


def _model(nodes, inputs, outputs, inits, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _w(name, shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _dynamic_uint8(a: np.ndarray) -> tuple[np.ndarray, np.float32, int]:
    """DynamicQuantizeLinear's arithmetic (ONNX spec): range widened to hold 0, uint8, round half to even."""
    lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.rint(np.clip(-lo / scale, 0, 255)))
    return np.clip(np.rint(a / scale) + zp, 0, 255).astype(np.int64), scale, zp


def _ref_matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, qmax: int = 127) -> np.ndarray:
    """The kernel's result: uint8 A (per run), int8 B per column on [-qmax, qmax], float accumulation."""
    scale_b = np.abs(b).max(axis=0) / qmax
    qb = np.clip(np.rint(b / scale_b.astype(np.float32)), -qmax, qmax).astype(np.int64)
    qa, scale_a, zp = _dynamic_uint8(a)
    y = ((qa - zp) @ qb).astype(np.float64) * scale_a * scale_b
    return (y + (0 if bias is None else bias)).astype(np.float32)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_matmul_with_bias_add_becomes_one_kernel_matching_its_arithmetic():
    model = _model([helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
                    helper.make_node("Add", ["m", "B"], ["y"], name="add")],
                   [helper.make_tensor_value_info("x", TP.FLOAT, [4, 16])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [4, 8])], [_w("W", (16, 8)), _w("B", (8,))])
    result = onnxq.quantize(model, None, DYNAMIC)
    assert _ops(result.model) == ["DynamicQuantizeMatMul"]
    assert {o.domain for o in result.model.opset_import} >= {"", "com.microsoft"}
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    w = numpy_helper.to_array(model.graph.initializer[0])
    b = numpy_helper.to_array(model.graph.initializer[1])
    got = ort_run(result.model, {"x": x})[0]
    np.testing.assert_allclose(got, _ref_matmul(x, w, b), rtol=1e-5, atol=1e-5)
    assert result.report.quantized_nodes == ("mm",) and result.report.tensors[0].channels == 8


def test_gemm_folds_alpha_beta_and_transposed_weights():
    model = _model([helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="fc", transB=1, alpha=0.5, beta=2.0)],
                   [helper.make_tensor_value_info("x", TP.FLOAT, [3, 12])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [3, 6])], [_w("W", (6, 12)), _w("C", (6,))])
    result = onnxq.quantize(model, None, DYNAMIC)
    assert _ops(result.model) == ["DynamicQuantizeMatMul"]
    x = RNG.standard_normal((3, 12)).astype(np.float32)
    w = numpy_helper.to_array(model.graph.initializer[0]).T * np.float32(0.5)
    c = numpy_helper.to_array(model.graph.initializer[1]) * np.float32(2.0)
    np.testing.assert_allclose(ort_run(result.model, {"x": x})[0], _ref_matmul(x, w, c), rtol=1e-5, atol=1e-5)


def test_reduce_range_and_per_tensor_weights_change_the_weight_grid():
    model = _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                   [helper.make_tensor_value_info("x", TP.FLOAT, [2, 16])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, [2, 8])], [_w("W", (16, 8))])
    seven = onnxq.quantize(model, None, QuantConfig(target="ort-cpu", mode="dynamic"))  # ort-cpu default
    codes = next(numpy_helper.to_array(t) for t in seven.model.graph.initializer if t.data_type == TP.INT8
                 and t.dims == [16, 8])
    assert np.abs(codes).max() == 63
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    w = numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_allclose(ort_run(seven.model, {"x": x})[0], _ref_matmul(x, w, None, 63), rtol=1e-5, atol=1e-5)
    per_tensor = onnxq.quantize(model, None, QuantConfig(target="ort-cpu", mode="dynamic",
                                                         weights={"per_channel": False}))
    scales = [t for t in per_tensor.model.graph.initializer if t.name.endswith("_scale")]
    assert [list(t.dims) for t in scales] == [[]]


def _lstm_model(hidden=16, inputs=8, seq=5, direction="bidirectional") -> onnx.ModelProto:
    d = 2 if direction == "bidirectional" else 1
    return _model([helper.make_node("MatMul", ["x", "P"], ["p"], name="proj"),
                   helper.make_node("LSTM", ["p", "W", "R", "B"], ["y", "yh", "yc"], name="lstm",
                                    hidden_size=hidden, direction=direction),
                   helper.make_node("GRU", ["p", "GW", "GR"], ["g", "gh"], name="gru", hidden_size=hidden)],
                  [helper.make_tensor_value_info("x", TP.FLOAT, [seq, 2, 6])],
                  [helper.make_tensor_value_info("y", TP.FLOAT, None), helper.make_tensor_value_info("g", TP.FLOAT, None)],
                  [_w("P", (6, inputs)), _w("W", (d, 4 * hidden, inputs), 0.3), _w("R", (d, 4 * hidden, hidden), 0.3),
                   _w("B", (d, 8 * hidden), 0.1), _w("GW", (1, 3 * hidden, inputs), 0.3),
                   _w("GR", (1, 3 * hidden, hidden), 0.3)])


def test_lstm_becomes_dynamic_quantize_lstm_close_to_float_and_gru_stays_float():
    model = _lstm_model()
    result = onnxq.quantize(model, None, DYNAMIC)
    ops = _ops(result.model)
    assert "DynamicQuantizeLSTM" in ops and "GRU" in ops and "LSTM" not in ops
    node = next(n for n in result.model.graph.node if n.op_type == "DynamicQuantizeLSTM")
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    w = numpy_helper.to_array(model.graph.initializer[1])  # [2, 64, 8]
    codes, scale = inits[node.input[1]], inits[node.input[8]]
    assert codes.shape == (2, 8, 64) and scale.shape == (2, 64)  # the kernel's layout, one scale per gate row
    ref = np.clip(np.rint(w / (np.abs(w).max(axis=2, keepdims=True) / 127).astype(np.float32)), -127, 127)
    np.testing.assert_array_equal(codes, ref.transpose(0, 2, 1))
    x = RNG.standard_normal((5, 2, 6)).astype(np.float32)
    floats, quants = ort_run(model, {"x": x}), ort_run(result.model, {"x": x})
    assert ref_sqnr_db([floats[0]], [quants[0]]) > 30
    skipped = {s.node: s for s in result.report.skipped}
    assert skipped["gru"].rule == "recurrent" and "no integer GRU kernel" in skipped["gru"].reason
    assert set(result.report.quantized_nodes) == {"proj", "lstm"}


def test_output_bytes_are_deterministic():
    model = _lstm_model()
    a = onnxq.quantize(model, None, DYNAMIC).model.SerializeToString(deterministic=True)
    b = onnxq.quantize(model, None, DYNAMIC).model.SerializeToString(deterministic=True)
    assert a == b


def test_lstm_with_weights_computed_at_run_time_stays_float():
    model = _lstm_model()
    model.graph.node.insert(0, helper.make_node("Identity", ["Wi"], ["Wrun"], name="w_of_input"))
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    lstm.input[1] = "Wrun"
    model.graph.input.append(helper.make_tensor_value_info("Wi", TP.FLOAT, [2, 64, 8]))
    result = onnxq.quantize(model, None, DYNAMIC)
    skipped = {s.node: s.reason for s in result.report.skipped}
    assert "computed at run time" in skipped["lstm"] and "LSTM" in _ops(result.model)


def test_dynamic_mode_refuses_the_tensorrt_target():
    with pytest.raises(onnxq.errors.ConfigError, match="ort-cpu"):
        QuantConfig(mode="dynamic")


def _residual_block(annotate: str | None = None) -> onnx.ModelProto:
    """x [B, S, 16] -> Reshape to its own shape (computed at run time, as a transformer's head split is) ->
    MatMul + bias -> Add(residual) -> LayerNormalization. onnx's inference with data propagation gives
    both Add inputs [B, S, 16]; onnxruntime's own inference does not. With ``annotate``, the input model
    carries a value_info for that tensor."""
    model = _model([helper.make_node("Shape", ["x"], ["s"], name="shape"),
                    helper.make_node("Reshape", ["x", "s"], ["h"], name="reshape"),
                    helper.make_node("MatMul", ["h", "W"], ["m"], name="mm"),
                    helper.make_node("Add", ["m", "B"], ["mb"], name="bias"),
                    helper.make_node("Add", ["mb", "h"], ["r"], name="residual"),
                    helper.make_node("LayerNormalization", ["r", "G", "Z"], ["y"], name="ln", epsilon=1e-5)],
                   [helper.make_tensor_value_info("x", TP.FLOAT, ["B", "S", 16])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, ["B", "S", 16])],
                   [_w("W", (16, 16)), _w("B", (16,)), _w("G", (16,)), _w("Z", (16,))])
    if annotate:
        model.graph.value_info.append(helper.make_tensor_value_info(annotate, TP.FLOAT, ["B", "S", 16]))
    return model


def _optimized_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return _ops(onnx.load(opts.optimized_model_filepath))


def test_written_model_keeps_only_the_input_models_shape_annotations(tmp_path):
    """onnxq's inferred shapes would let onnxruntime fuse Add + LayerNormalization into its slower
    SkipLayerNormalization (graph.annotations); the input's own annotations stay; same arithmetic."""
    model = _residual_block()
    result = onnxq.quantize(model, None, DYNAMIC)
    assert list(result.model.graph.value_info) == []
    # With onnxq's annotations written, onnxruntime fused the Add and LayerNormalization (measured).
    assert "SkipLayerNormalization" not in _optimized_ops(model, tmp_path)
    assert _optimized_ops(result.model, tmp_path) == ["Shape", "Reshape", "DynamicQuantizeMatMul", "Add",
                                                      "LayerNormalization"]
    kept = onnxq.quantize(_residual_block(annotate="r"), None, DYNAMIC).model
    assert [vi.name for vi in kept.graph.value_info] == ["r"]
    x = RNG.standard_normal((2, 5, 16)).astype(np.float32)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    r = _ref_matmul(x.reshape(10, 16), inits["W"], inits["B"]).reshape(2, 5, 16) + x
    mean, var = r.mean(-1, keepdims=True), r.var(-1, keepdims=True)
    ref = (r - mean) / np.sqrt(var + 1e-5) * inits["G"] + inits["Z"]
    np.testing.assert_allclose(ort_run(result.model, {"x": x}, optimize=True)[0], ref, rtol=1e-4, atol=1e-4)
