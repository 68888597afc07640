"""Bias correction: tap means against a brute-force im2col, and corrected models checked with onnxruntime.

The end-to-end oracle: after correction, the per-channel mean output of the quantized model on the data
the means came from equals the float model's (the correction is exact by linearity), while without it
the mean error is clearly non-zero.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.analysis.activation_means import correctable_nodes, input_moments, input_quantizers, output_means
from onnxq.calibrate.bias_correction import (
    ConvGeometry,
    InputMoments,
    conv_expected,
    conv_tap_means,
    corrected_bias,
    matmul_means,
    merge_moments,
    output_shift,
)
from onnxq.calibrate.solve import solve
from onnxq.collect.stats import new_stats, observe
from onnxq.config import QuantConfig
from onnxq.formats import fake_quantize_as
from onnxq.placement import plan
from onnxq.rewrite import insert_qdq
from onnxq.rewrite.bias_correction import apply_bias_shifts, correct_biases


# ----------------------------------------------------------------------------------- numpy references
def ref_im2col(x: np.ndarray, kernel, strides, pads, dilations) -> np.ndarray:
    """[N, C, taps, positions] by explicit loops over output positions (2-D only)."""
    n, c, h, w = x.shape
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    oh = (xp.shape[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (xp.shape[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    cols = np.zeros((n, c, kernel[0] * kernel[1], oh * ow))
    for i, j in itertools.product(range(oh), range(ow)):
        for t, (a, b) in enumerate(itertools.product(range(kernel[0]), range(kernel[1]))):
            r, c = i * strides[0] + a * dilations[0], j * strides[1] + b * dilations[1]
            cols[:, :, t, i * ow + j] = xp[:, :, r, c]
    return cols


def ref_conv(x: np.ndarray, w: np.ndarray, group: int, **geometry) -> np.ndarray:
    """Output [N, O, positions] of a grouped conv without bias, via the reference im2col."""
    cols = ref_im2col(x, w.shape[2:], **geometry)
    o, cg = w.shape[:2]
    out = []
    for g in range(group):
        wg = w[g * (o // group):(g + 1) * (o // group)].reshape(o // group, cg, -1)
        out.append(np.einsum("oct,nctp->nop", wg, cols[:, g * cg:(g + 1) * cg]))
    return np.concatenate(out, axis=1)


GEOMETRIES = [
    dict(kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1)),
    dict(kernel=(3, 2), strides=(2, 1), pads=(0, 1, 2, 0), dilations=(1, 2)),
    dict(kernel=(1, 1), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1)),
    dict(kernel=(1, 1), strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)),  # the pointwise fast path
    dict(kernel=(1, 1), strides=(1, 1), pads=(1, 0, 0, 1), dilations=(1, 1)),  # padded: taps read zeros
]


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_tap_means_match_im2col(geo: dict) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 7, 6))
    g = ConvGeometry(geo["kernel"], geo["strides"], geo["dilations"], geo["pads"])
    mean, count = conv_tap_means(x, g)
    cols = ref_im2col(x, geo["kernel"], geo["strides"], geo["pads"], geo["dilations"])
    np.testing.assert_allclose(mean, cols.mean(axis=(0, 3)), rtol=1e-12, atol=1e-12)
    assert count == 3 * cols.shape[3]


def test_taps_reading_only_padding_have_zero_mean() -> None:
    x = np.random.default_rng(12).standard_normal((2, 3, 1, 4)) + 5.0
    geo = dict(kernel=(3, 3), strides=(3, 3), pads=(2, 2, 2, 2), dilations=(1, 1))
    mean, _ = conv_tap_means(x, ConvGeometry(geo["kernel"], geo["strides"], geo["dilations"], geo["pads"]))
    ref = ref_im2col(x, **geo).mean(axis=(0, 3))
    np.testing.assert_allclose(mean, ref, rtol=1e-12, atol=1e-12)
    assert not np.any(mean[:, :3]) and np.all(mean[:, 6:] != 0)  # first kernel row reads only padding


def test_same_upper_padding_resolves_as_onnx() -> None:
    g = ConvGeometry((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), auto_pad="SAME_UPPER")
    assert g.resolved_pads((7, 8)) == ([1, 0], [1, 1])  # total 2 then 1: the odd pixel goes at the end
    lower = dataclasses.replace(g, auto_pad="SAME_LOWER")
    assert lower.resolved_pads((7, 8)) == ([1, 1], [1, 0])


@pytest.mark.parametrize("group", [1, 2, 4])
def test_conv_expected_is_mean_of_conv(group: int) -> None:
    rng = np.random.default_rng(1)
    geo = GEOMETRIES[1]
    x = rng.uniform(0, 1, (5, 4, 6, 6))  # positive means, as after ReLU
    w = rng.standard_normal((8, 4 // group, *geo["kernel"]))
    mean, _ = conv_tap_means(x, ConvGeometry(geo["kernel"], geo["strides"], geo["dilations"], geo["pads"]))
    ref = ref_conv(x, w, group, strides=geo["strides"], pads=geo["pads"], dilations=geo["dilations"])
    np.testing.assert_allclose(conv_expected(w, mean, group), ref.mean(axis=(0, 2)), rtol=1e-10)


def test_merge_equals_mean_over_all_batches_of_any_size() -> None:
    rng = np.random.default_rng(2)
    g = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    a, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((3, 3, 8, 4))  # spatial sizes differ
    merged = None
    for x in (a, b):
        merged = merge_moments(merged, InputMoments(*conv_tap_means(x, g)))
    cols = [ref_im2col(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)) for x in (a, b)]
    flat = np.concatenate([c.transpose(0, 3, 1, 2).reshape(-1, 3, 9) for c in cols])
    np.testing.assert_allclose(merged.mean, flat.mean(axis=0), rtol=1e-12)
    assert merged.count == flat.shape[0]


def test_matmul_means_reduce_all_but_k() -> None:
    x = np.random.default_rng(3).standard_normal((2, 5, 4))
    mean, count = matmul_means(x)
    np.testing.assert_allclose(mean, x.reshape(-1, 4).mean(0))
    assert count == 10
    np.testing.assert_allclose(matmul_means(x[0].T, trans=True)[0], x[0].mean(0))


def test_no_shift_when_nothing_is_quantized() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 3, 3, 3))
    moments = InputMoments(rng.standard_normal((3, 9)), 10)
    assert not np.any(output_shift("Conv", {}, w, w.copy(), moments))
    both = InputMoments(moments.mean, 10, moments.mean.copy())
    assert not np.any(output_shift("Conv", {}, w, w.copy(), both))
    b = rng.standard_normal(6).astype(np.float32)
    assert np.array_equal(corrected_bias(b, np.zeros(6)), b)


def test_gemm_shift_honours_trans_b_and_alpha() -> None:
    rng = np.random.default_rng(5)
    w, dw = rng.standard_normal((7, 5)), rng.standard_normal((7, 5)) * 1e-2  # [N, K] with transB
    m = rng.standard_normal(5)
    got = output_shift("Gemm", {"transB": 1, "alpha": 0.5}, w, w + dw, InputMoments(m, 1))
    np.testing.assert_allclose(got, 0.5 * (m @ dw.T))


# ------------------------------------------------------------------------- end to end with onnxruntime
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
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts).run(None, {"X": x})[0]


def _channel_mean(y: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(y.astype(np.float64), axis, -1).reshape(-1, y.shape[axis]).mean(0)


def _mean_errors(model: onnx.ModelProto, x: np.ndarray, axis: int, *, activations: bool):
    """(uncorrected, corrected) per-channel mean output error of the quantized model on ``x``."""
    config = QuantConfig()
    full = plan(model, config)
    qplan = full if activations else dataclasses.replace(full, specs=tuple(full.weights()))
    stats = {}
    for spec in qplan.activations():
        stats[spec.tensor] = observe(new_stats(2048, histogram=False), x)
    params = solve(stats, qplan, model, config)
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
    config = QuantConfig()
    qplan = plan(model, config)
    x = np.random.default_rng(10).uniform(0, 1, (2, 8, 9, 9)).astype(np.float32)
    params = solve({"X": observe(new_stats(2048, histogram=False), x)}, qplan, model, config)
    corrected = apply_bias_shifts(model, {"conv": np.full(8, 0.25)}, qplan)
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
    config = QuantConfig()
    qplan = plan(model, config)
    params = solve({"X": observe(new_stats(2048, histogram=False), np.ones((1, 8, 9, 9), np.float32))},
                   qplan, model, config)
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
    excluded = QuantConfig(exclude_nodes=("conv",))
    qplan = plan(model, excluded)
    assert bias_corrected(model, qplan, solve(stats, qplan, model, excluded), feeds) is model
    config = QuantConfig()
    qplan = plan(model, config)
    params = solve(stats, qplan, model, config)
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
    config = QuantConfig()
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
    params = solve(q.stats, qplan, model, config)
    want = correct_biases(model, qplan, params, input_moments(model, nodes, feeds))
    got_bias, want_bias = (_conv_bias(m) for m in (q.model, want))
    np.testing.assert_allclose(got_bias, want_bias, rtol=1e-6, atol=1e-7)
    assert np.abs(got_bias - _conv_bias(model)).max() > 1e-5  # the correction did change the bias


def _conv_bias(model: onnx.ModelProto) -> np.ndarray:
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[conv.input[2]]
