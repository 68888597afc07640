"""Q/DQ insertion checked against onnxruntime executing the graph and a numpy fake-quant reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MINMAX, fake_quant, ort_run

from onnxq.calibrate.solve import solve
from onnxq.collect.stats import new_stats, observe
from onnxq.config import QuantConfig, WeightSpec
from onnxq.formats import quantize_as
from onnxq.placement import plan
from onnxq.records import QuantParams, Role
from onnxq.rewrite import insert_qdq
from onnxq.testing import model_from_text

CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,6,6] x) => (float[1,4,6,6] y) { y = Conv <pads=[1,1,1,1]> (x, W, B) }
"""


def run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    return ort_run(model, feed)[0]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain numpy 3x3 convolution with padding 1 (the reference the QDQ graph must match)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, c, h, wd = x.shape
    out = np.zeros((n, w.shape[0], h, wd), np.float64)
    for i in range(h):
        for j in range(wd):
            patch = xp[:, :, i:i + 3, j:j + 3]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return (out + b[None, :, None, None]).astype(np.float32)


@pytest.mark.parametrize("dq_only", [False, True])
def test_conv_qdq_matches_numpy_fake_quantization(dq_only: bool) -> None:
    rng = np.random.default_rng(0)
    m = model_from_text(CONV, weights={"W": (4, 3, 3, 3), "B": (4,)})
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    qplan = plan(m)
    stats = {"x": observe(new_stats(histogram=False), x)}
    params = solve(stats, qplan, QuantConfig(activations=MINMAX))
    q = insert_qdq(m, qplan, params, dq_only=dq_only)
    onnx.checker.check_model(q, full_check=True)
    w = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "W"))
    b = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "B"))
    x_scale = np.abs(x).max() / 127
    w_scale = np.abs(w).reshape(4, -1).max(1) / 127
    np.testing.assert_allclose(params["x"].scale, x_scale, rtol=1e-6)
    expected = conv2d(fake_quant(x, x_scale), fake_quant(w, w_scale, axis=0, qmin=-127), b)
    np.testing.assert_allclose(run(q, {"x": x}), expected, rtol=1e-4, atol=1e-4)
    # every zero point is 0 and weights stay within [-127, 127]
    for init in q.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if init.name.endswith("zero_point"):
            assert not arr.any()
        if init.name.endswith("_quantized"):
            assert arr.min() >= -127


def test_qdq_names_are_deterministic_and_original_tensors_kept() -> None:
    m = model_from_text(CONV, weights={"W": (4, 3, 3, 3), "B": (4,)})
    qplan = plan(m)
    params = solve({"x": observe(new_stats(histogram=False), np.ones((1, 3, 6, 6), np.float32))}, qplan,
                   QuantConfig(activations=MINMAX))
    a = insert_qdq(m, qplan, params).SerializeToString(deterministic=True)
    b = insert_qdq(m, qplan, params).SerializeToString(deterministic=True)
    assert a == b
    names = {n.name for n in onnx.load_from_string(a).graph.node}
    assert {"x_QuantizeLinear", "x_DequantizeLinear", "W_QuantizeLinear", "W_DequantizeLinear"} <= names


def test_uint8_activation_and_int32_bias_for_ort_cpu_target() -> None:
    rng = np.random.default_rng(1)
    m = model_from_text(CONV, weights={"W": (4, 3, 3, 3), "B": (4,)})
    x = rng.uniform(0, 2, (1, 3, 6, 6)).astype(np.float32)
    cfg = QuantConfig(activations=MINMAX, target="ort-cpu")
    qplan = plan(m, cfg)
    stats = {s.tensor: observe(new_stats(histogram=False), x) for s in qplan.activations()}
    params = solve(stats, qplan, cfg)
    q = insert_qdq(m, qplan, params, dq_only=True)
    onnx.checker.check_model(q, full_check=True)
    px = params["x"]
    assert px.dtype == "uint8" and px.zero_point == 0 and np.isclose(px.scale, x.max() / 255)
    bias = next(s for s in qplan.specs if s.role is Role.BIAS)
    pb = params[bias.key]
    w_scale = params[next(s.key for s in qplan.weights())].scale
    np.testing.assert_allclose(pb.scale, px.scale * w_scale, rtol=1e-6)
    w = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "W"))
    b = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "B"))
    b_q = np.rint(b / pb.scale) * pb.scale
    expected = conv2d(fake_quant(x, px.scale, qmin=0, qmax=255), fake_quant(w, w_scale, axis=0, qmin=-127), b_q)
    np.testing.assert_allclose(run(q, {"x": x}), expected, rtol=1e-4, atol=1e-4)


def test_written_integers_are_what_quantizelinear_computes() -> None:
    """dq_only int8 weights hold onnxruntime's QuantizeLinear codes of the float weight (no clipping at max
    calibration, so the narrow grid does not bind); int32 biases the same rule, by hand (no int32 Q op)."""
    m = model_from_text(CONV, weights={"W": (4, 3, 3, 3), "B": (4,)}, seed=3)
    cfg = QuantConfig(activations=MINMAX, target="ort-cpu")
    qplan = plan(m, cfg)
    x = np.random.default_rng(2).uniform(0, 2, (1, 3, 6, 6)).astype(np.float32)
    stats = {s.tensor: observe(new_stats(histogram=False), x) for s in qplan.activations()}
    params = solve(stats, qplan, cfg)
    q = insert_qdq(m, qplan, params, dq_only=True)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    w = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "W"))
    pw = params[qplan.weights()[0].key]
    node = onnx.helper.make_node("QuantizeLinear", ["w", "s", "z"], ["q"], axis=0)
    graph = onnx.helper.make_graph(
        [node], "q", [onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, w.shape)],
        [onnx.helper.make_tensor_value_info("q", onnx.TensorProto.INT8, w.shape)],
        [onnx.numpy_helper.from_array(pw.scale, "s"), onnx.numpy_helper.from_array(pw.zero_point, "z")])
    want = run(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), {"w": w})
    np.testing.assert_array_equal(inits["W_quantized"], want)
    b = onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "B"))
    pb = params[next(s.key for s in qplan.specs if s.role is Role.BIAS)]
    np.testing.assert_array_equal(inits["B_bias_quantized"], np.rint(b / pb.scale).astype(np.int32))
    half = QuantParams(np.float32(0.5), np.int8(0), None, "int8")
    got = quantize_as(np.array([0.25, 0.75, 1000.0, -1000.0], np.float32), half)
    assert got.tolist() == [0, 2, 127, -128]
    assert quantize_as(np.array([-1000.0], np.float32), half, narrow=True).tolist() == [-127]  # weights


def test_per_tensor_weights_option_gives_scalar_scale() -> None:
    m = model_from_text(CONV, weights={"W": (4, 3, 3, 3), "B": (4,)})
    cfg = QuantConfig(activations=MINMAX, weights=WeightSpec(per_channel=False))
    qplan = plan(m, cfg)
    params = solve({"x": observe(new_stats(histogram=False), np.ones((1, 3, 6, 6), np.float32))}, qplan, cfg)
    assert params[qplan.weights()[0].key].scale.ndim == 0
