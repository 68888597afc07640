"""Bias correction applied (onnxq.rewrite.bias_correction, the means from onnxq.analysis.activation_means),
corrected models checked with onnxruntime. Its arithmetic alone: calibrate/test_bias_correction.py.

The end-to-end oracle: after correction, the per-channel mean output of the quantized model on the data
the means came from equals the float model's (the correction is exact by linearity), while without it
the mean error is clearly non-zero.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import MINMAX, ort_run
from onnx import TensorProto, helper, numpy_helper

from onnxq.analysis.activation_means import correctable_nodes, input_moments, input_quantizers, output_means
from onnxq.calibrate.solve import solve
from onnxq.collect.stats import new_stats, observe
from onnxq.config import QuantConfig
from onnxq.formats import fake_quantize_as
from onnxq.placement import plan
from onnxq.rewrite import insert_qdq
from onnxq.rewrite.bias_correction import apply_bias_shifts, correct_biases


def _conv_model(with_bias: bool, group: int) -> onnx.ModelProto:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((8, 8 // group, 3, 3)).astype(np.float32) * 0.3
    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["X", "W"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B"))
        inputs.append("B")
    conv = helper.make_node("Conv", inputs, ["Y"], name="conv", pads=[1, 0, 2, 1], strides=[2, 1],
                            group=group)
    graph = helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 8, 9, 9])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _gemm_model(with_c: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 10)).astype(np.float32), "W")]
    inputs = ["X", "W"]
    if with_c:
        inits.append(numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "C"))
        inputs.append("C")
    gemm = helper.make_node("Gemm", inputs, ["Y"], name="gemm", transB=1, alpha=0.7, beta=1.3)
    graph = helper.make_graph(
        [gemm], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 10])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _matmul_add_model() -> onnx.ModelProto:
    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array(rng.standard_normal((10, 6)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["M"], name="matmul"),
             helper.make_node("Add", ["M", "B"], ["Y"], name="add")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3, 10])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort_run(model, {"X": x})[0]


def _channel_mean(y: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(y.astype(np.float64), axis, -1).reshape(-1, y.shape[axis]).mean(0)


def _mean_errors(model: onnx.ModelProto, x: np.ndarray, axis: int, *, activations: bool):
    """(uncorrected, corrected) per-channel mean output error of the quantized model on ``x``."""
    config = QuantConfig(activations=MINMAX)
    full = plan(model, config)
    qplan = full if activations else dataclasses.replace(full, specs=tuple(full.weights()))
    stats = {}
    for spec in qplan.activations():
        stats[spec.tensor] = observe(new_stats(2048, histogram=False), x)
    params = solve(stats, qplan, config)
    nodes = correctable_nodes(model)
    feeds = [{"X": x[:3]}, {"X": x[3:]}]  # two batches: the streaming merge is exercised
    quantizers = input_quantizers(qplan, params) if activations else None
    moments = input_moments(model, nodes, feeds, quantizers)
    corrected = correct_biases(model, qplan, params, moments)
    ref = _channel_mean(_run(model, x), axis)
    before = _channel_mean(_run(insert_qdq(model, qplan, params), x), axis) - ref
    after = _channel_mean(_run(insert_qdq(corrected, qplan, params), x), axis) - ref
    return before, after


CASES = [
    ("conv", lambda: _conv_model(True, 1), (7, 8, 9, 9), 1),
    ("conv-no-bias-grouped", lambda: _conv_model(False, 2), (7, 8, 9, 9), 1),
    ("depthwise", lambda: _conv_model(True, 8), (7, 8, 9, 9), 1),
    ("gemm", lambda: _gemm_model(True), (40, 10), -1),
    ("gemm-no-c", lambda: _gemm_model(False), (40, 10), -1),
    ("matmul-add", _matmul_add_model, (20, 3, 10), -1),
]


@pytest.mark.parametrize("activations", [False, True], ids=["weights", "weights+activations"])
@pytest.mark.parametrize("name,build,shape,axis", CASES, ids=[c[0] for c in CASES])
def test_corrected_mean_output_matches_float(name, build, shape, axis, activations: bool) -> None:
    x = np.random.default_rng(9).uniform(0.0, 2.0, shape).astype(np.float32)  # non-zero mean inputs
    before, after = _mean_errors(build(), x, axis, activations=activations)
    assert np.abs(before).max() > 1e-4  # quantization does shift the mean
    assert np.abs(after).max() < 2e-6 + 1e-3 * np.abs(before).max()


def test_correction_keeps_names_and_placement() -> None:
    model = _conv_model(True, 1)
    config = QuantConfig(activations=MINMAX)
    qplan = plan(model, config)
    x = np.random.default_rng(10).uniform(0, 1, (2, 8, 9, 9)).astype(np.float32)
    params = solve({"X": observe(new_stats(2048, histogram=False), x)}, qplan, config)
    graph = gs.import_onnx(model)
    apply_bias_shifts(graph, {"conv": np.full(8, 0.25)}, qplan)  # in place
    corrected = gs.export_onnx(graph)
    assert [n.input for n in corrected.graph.node] == [n.input for n in model.graph.node]
    old = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in corrected.graph.initializer}
    np.testing.assert_allclose(new["B"], old["B"] - 0.25, rtol=1e-6)
    np.testing.assert_array_equal(new["W"], old["W"])
    a, b = insert_qdq(model, qplan, params), insert_qdq(corrected, qplan, params)
    edges = [[(n.op_type, list(n.input)) for n in m.graph.node] for m in (a, b)]
    assert edges[0] == edges[1]


def test_output_means_per_channel() -> None:
    model = _conv_model(True, 1)
    x = np.random.default_rng(11).uniform(0, 1, (4, 8, 9, 9)).astype(np.float32)
    got = output_means(model, {"Y": 1}, [{"X": x[:1]}, {"X": x[1:]}])["Y"]
    np.testing.assert_allclose(got, _channel_mean(_run(model, x), 1), rtol=1e-6)


def test_fake_quant_matches_qdq_of_onnxruntime() -> None:
    model = _conv_model(True, 1)
    config = QuantConfig(activations=MINMAX)
    qplan = plan(model, config)
    params = solve({"X": observe(new_stats(2048, histogram=False), np.ones((1, 8, 9, 9), np.float32))},
                   qplan, config)
    w = numpy_helper.to_array(model.graph.initializer[0])
    p = params[qplan.weights()[0].key]
    scale = p.scale.reshape(-1, 1, 1, 1)
    want = (np.clip(np.rint(w / scale), -128, 127) * scale).astype(np.float32)
    np.testing.assert_array_equal(fake_quantize_as(w, p), want)


def test_bias_corrected_follows_the_plan() -> None:
    from onnxq.analysis.activation_means import bias_corrected

    model = _conv_model(True, 1)
    x = np.random.default_rng(13).uniform(0, 1, (4, 8, 9, 9)).astype(np.float32)
    stats = {"X": observe(new_stats(2048, histogram=False), x)}
    feeds = [{"X": x}]
    excluded = QuantConfig(activations=MINMAX, exclude_nodes=("conv",))
    qplan = plan(model, excluded)
    assert bias_corrected(model, qplan, solve(stats, qplan, excluded), feeds) is model
    config = QuantConfig(activations=MINMAX)
    qplan = plan(model, config)
    params = solve(stats, qplan, config)
    got = bias_corrected(model, qplan, params, feeds)
    want = correct_biases(model, qplan, params, input_moments(model, correctable_nodes(model), feeds))
    bias = {t.name: numpy_helper.to_array(t) for t in got.graph.initializer}["B"]
    want_bias = {t.name: numpy_helper.to_array(t) for t in want.graph.initializer}["B"]
    np.testing.assert_array_equal(bias, want_bias)
    assert not np.array_equal(bias, numpy_helper.to_array(model.graph.initializer[1]))


@pytest.mark.parametrize("memory_mb", [None, 1e-4], ids=["one-pass", "one-tensor-per-pass"])
def test_moments_from_the_collection_equal_a_separate_pass(memory_mb) -> None:
    from onnxq.analysis.activation_means import correction_nodes, moment_reducers
    from onnxq.collect.collectors import collect_all
    from onnxq.collect.python_sources import from_iterable

    model = _conv_model(True, 2)
    x = np.random.default_rng(14).uniform(0, 1, (5, 8, 9, 9)).astype(np.float32)
    feeds = [{"X": x[i:i + 1]} for i in range(5)]
    config = QuantConfig(activations=MINMAX)
    qplan = plan(model, config)
    nodes = correction_nodes(model, qplan)
    assert [n.node for n in nodes] == ["conv"]
    got = collect_all(model, qplan, from_iterable(feeds), config, reducers=moment_reducers(nodes),
                      memory_mb=memory_mb)
    want = input_moments(model, nodes, feeds)
    assert got.samples == 5 and set(got.reduced) == {"conv"}
    np.testing.assert_allclose(got.reduced["conv"].mean, want["conv"].mean, rtol=1e-6)
    assert got.reduced["conv"].count == want["conv"].count
    # and quantize() (which takes them from its one collection) corrects the bias the same way
    from onnxq.api import quantize

    q = quantize(model, feeds, config)
    params = solve(q.stats, qplan, config)
    want = correct_biases(model, qplan, params, input_moments(model, nodes, feeds))
    got_bias, want_bias = (_conv_bias(m) for m in (q.model, want))
    np.testing.assert_allclose(got_bias, want_bias, rtol=1e-6, atol=1e-7)
    assert np.abs(got_bias - _conv_bias(model)).max() > 1e-5  # the correction did change the bias


def _conv_bias(model: onnx.ModelProto) -> np.ndarray:
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[conv.input[2]]
