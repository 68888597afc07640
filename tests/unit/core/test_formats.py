"""The quantize/dequantize arithmetic (onnxq.formats), bit for bit against onnxruntime's own kernels.

The reference is onnxruntime running a one-node QuantizeLinear or DequantizeLinear graph (graph
optimizations off). Inputs are built to hit what differs between plausible implementations: values
within two ulps of a rounding tie ``(k + 1/2) * scale``, arbitrary (non power of two) float32 scales,
saturation, infinities and NaN, per-axis parameters on every axis, tiny and denormal scales, and
lengths that reach both the vectorized body and the scalar tail of the kernel.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers import ort_session
from onnx import TensorProto, helper, numpy_helper

from onnxq.errors import ConfigError
from onnxq.formats import (
    FORMATS,
    INT8,
    INT32,
    UINT8,
    dequantize,
    fake_quantize,
    fake_quantize_as,
    int_format,
    quantize,
    quantize_as,
)
from onnxq.records import QuantParams

OPSETS = (13, 21)


def _session(op: str, x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None, opset: int,
             out_type: int) -> ort.InferenceSession:
    attrs = {} if axis is None else {"axis": axis}
    in_type = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "s", "z"], ["y"], **attrs)], "one_node",
        [helper.make_tensor_value_info("x", in_type, list(x.shape))],
        [helper.make_tensor_value_info("y", out_type, list(x.shape))],
        initializer=[numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset == 13 else 10
    return ort_session(model)


def ort_quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None = None,
                 opset: int = 13) -> np.ndarray:
    out_type = helper.np_dtype_to_tensor_dtype(zp.dtype)
    return _session("QuantizeLinear", x, scale, zp, axis, opset, out_type).run(None, {"x": x})[0]


def ort_dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None = None,
                   opset: int = 13) -> np.ndarray:
    return _session("DequantizeLinear", q, scale, zp, axis, opset, TensorProto.FLOAT).run(None, {"x": q})[0]


def near_ties(rng: np.random.Generator, shape: tuple[int, ...], scale: np.ndarray, axis: int | None,
              span: int = 140) -> np.ndarray:
    """``(k + 1/2) * scale`` in float32, moved by -2..2 ulps: the values whose rounding depends on how
    the quotient is computed. ``span`` past the grid reaches saturation."""
    k = rng.integers(-span, span, shape).astype(np.float32) + np.float32(0.5)
    if axis is not None:
        scale = scale.reshape([-1 if i == axis % len(shape) else 1 for i in range(len(shape))])
    s = scale
    x = (k * s).astype(np.float32)
    return (x.view(np.int32) + rng.integers(-2, 3, shape).astype(np.int32)).view(np.float32)


def _zero_point(rng: np.random.Generator, dtype: type, size: int | None) -> np.ndarray:
    low, high = (-20, 20) if dtype == np.int8 else (100, 160)
    return np.asarray(rng.integers(low, high, size), dtype=dtype)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("fmt", [INT8, UINT8], ids=["int8", "uint8"])
def test_per_tensor_quantize_is_onnxruntime_bit_for_bit(fmt, opset: int) -> None:
    rng = np.random.default_rng(opset)
    for trial in range(6):
        scale = np.float32(rng.uniform(0.1, 1.0) * 10.0 ** rng.integers(-5, 2))  # not a power of two
        zp = _zero_point(rng, fmt.numpy, None)
        x = near_ties(rng, (1 << 16,), np.asarray(scale), None)
        want = ort_quantize(x, np.asarray(scale), zp, None, opset)
        got = quantize(x, scale, int(zp), None, fmt.qmin, fmt.qmax)
        assert got.dtype == fmt.numpy
        np.testing.assert_array_equal(got, want)
        y = ort_dequantize(want, np.asarray(scale), zp)
        np.testing.assert_array_equal(dequantize(got, scale, int(zp)), y)
        np.testing.assert_array_equal(fake_quantize(x, scale, int(zp), None, fmt.qmin, fmt.qmax), y)


def test_onnxruntime_divides_in_float32_not_by_a_reciprocal_or_in_float64() -> None:
    """Why the arithmetic is ``x / scale`` in float32: the two other readings miss many near-ties."""
    rng = np.random.default_rng(7)
    scale = np.float32(0.0123)
    x = near_ties(rng, (1 << 16,), np.asarray(scale), None, span=120)
    want = ort_quantize(x, np.asarray(scale), np.array(0, np.int8))
    reciprocal = np.clip(np.rint(x * (np.float32(1) / scale)), -128, 127).astype(np.int8)
    float64 = np.clip(np.rint(x.astype(np.float64) / np.float64(scale)), -128, 127).astype(np.int8)
    assert np.mean(reciprocal != want) > 0.05 and np.mean(float64 != want) > 0.05
    np.testing.assert_array_equal(quantize(x, scale), want)


@pytest.mark.parametrize("fmt", [INT8, UINT8], ids=["int8", "uint8"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_per_axis_is_onnxruntime_bit_for_bit(fmt, axis: int) -> None:
    rng = np.random.default_rng(abs(axis) + 10 * fmt.qmax)
    shape = (5, 6, 7)
    channels = shape[axis]
    scale = rng.uniform(0.001, 0.3, channels).astype(np.float32)
    zp = _zero_point(rng, fmt.numpy, channels)
    x = near_ties(rng, shape, scale, axis)
    want = ort_quantize(x, scale, zp, axis)
    got = quantize(x, scale, zp, axis, fmt.qmin, fmt.qmax)
    np.testing.assert_array_equal(got, want)
    y = ort_dequantize(want, scale, zp, axis)
    np.testing.assert_array_equal(dequantize(got, scale, zp, axis), y)
    np.testing.assert_array_equal(fake_quantize(x, scale, zp, axis, fmt.qmin, fmt.qmax), y)


@pytest.mark.parametrize("size", [1, 3, 5, 17, 1001])
def test_every_length_reaches_the_same_result(size: int) -> None:
    """onnxruntime quantizes blocks of 4 (or more) in vector code and the rest in scalar code."""
    rng = np.random.default_rng(size)
    scale = np.float32(0.0371)
    x = near_ties(rng, (size,), np.asarray(scale), None)
    want = ort_quantize(x, np.asarray(scale), np.array(130, np.uint8))
    np.testing.assert_array_equal(quantize(x, scale, 130, None, 0, 255), want)


SPECIAL = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 1e-30, -1e-30, 0.0, -0.0, 3.0, -3.0, np.nan],
                   np.float32)


@pytest.mark.parametrize("scale", [1.0, 2.0**-23, float(np.finfo(np.float32).tiny), 1e-40, 1e30],
                         ids=["one", "min_scale", "tiny", "denormal", "huge"])
@pytest.mark.parametrize("fmt,zp", [(INT8, 3), (UINT8, 128)], ids=["int8", "uint8"])
def test_saturation_infinities_nan_and_tiny_scales(scale: float, fmt, zp: int) -> None:
    """Infinities and far values saturate, NaN becomes qmin (onnxruntime clamps before rounding and its
    clamp takes the bound for NaN), denormal scales divide as they are (no flush to zero)."""
    s = np.asarray(np.float32(scale))
    want = ort_quantize(SPECIAL, s, np.array(zp, fmt.numpy))
    with np.errstate(invalid="ignore", over="ignore"):
        got = quantize(SPECIAL, s, zp, None, fmt.qmin, fmt.qmax)
    np.testing.assert_array_equal(got, want)
    assert got[0] == fmt.qmin


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_dequantize_is_onnxruntime_bit_for_bit(dtype: type) -> None:
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    q = rng.integers(info.min, info.max, (64, 33), endpoint=True).astype(dtype)
    if dtype == np.int32:
        zp = np.zeros(33, dtype)  # int32 codes are biases: zero point 0 (larger ones could overflow int32)
    else:
        zp = rng.integers(info.min, info.max, 33, endpoint=True).astype(dtype)
    scale = rng.uniform(1e-6, 3.0, 33).astype(np.float32)
    np.testing.assert_array_equal(dequantize(q, scale, zp, 1), ort_dequantize(q, scale, zp, 1))
    np.testing.assert_array_equal(dequantize(q, scale[4], zp[4]), ort_dequantize(q, scale[4], zp[4]))


def test_rounding_by_hand() -> None:
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 0.49999997, 126.5, 127.5, 200.0, -200.0], np.float32)
    assert quantize(x, 1.0).tolist() == [0, 2, 2, 4, 0, -2, -2, 0, 126, 127, 127, -128]
    u8 = quantize(np.array([0.5, 1.5, 254.5, 300.0, -3.0], np.float32), 1.0, 0, None, 0, 255)
    assert u8.dtype == np.uint8 and u8.tolist() == [0, 2, 254, 255, 0]
    assert quantize(np.array([2.5], np.float32), 1.0, 10).tolist() == [12]  # round first, then add zp


def test_int32_grid_is_exact_up_to_its_limits() -> None:
    """int32 (biases) has no onnxruntime QuantizeLinear: the same rule, with the limits exact (a float32
    bound of 2**31 - 1 would be 2**31 and wrap around)."""
    x = np.array([2.5, -2.5, 1e12, -1e12, 2.0**31, 123456789.0, 16777217.0], np.float32)
    q = quantize(x, 1.0, 0, None, INT32.qmin, INT32.qmax)
    assert q.dtype == np.int32
    assert q.tolist() == [2, -2, 2**31 - 1, -(2**31), 2**31 - 1, 123456792, 16777216]  # x itself is float32
    quotient = (x / np.float32(0.37)).astype(np.float64)  # the float32 quotient, rounded in float64
    want = np.clip(np.rint(quotient), INT32.qmin, INT32.qmax).astype(np.int32)
    np.testing.assert_array_equal(quantize(x, 0.37, 0, None, INT32.qmin, INT32.qmax), want)


def test_params_forms_and_narrow_grid() -> None:
    """quantize_as / fake_quantize_as read dtype, axis and zero point from QuantParams; ``narrow`` stops
    a signed grid at -qmax."""
    w = np.array([[0.5, 1.5, 2.5, -0.5], [-1.5, 300.0, -300.0, 0.26]], np.float32)
    p = QuantParams(np.array([1.0, 2.0], np.float32), np.zeros(2, np.int8), 0, "int8")
    want_q = ort_quantize(w, p.scale, p.zero_point, 0)
    np.testing.assert_array_equal(quantize_as(w, p), want_q)
    np.testing.assert_array_equal(fake_quantize_as(w, p), ort_dequantize(want_q, p.scale, p.zero_point, 0))
    assert quantize_as(w, p, narrow=True)[1, 2] == -127
    assert fake_quantize_as(w, p, narrow=True)[1, 2] == -254.0
    per_tensor = QuantParams(np.array(0.5, np.float32), np.array(0, np.int8), 0, "int8")  # axis, 0-d scale
    assert quantize_as(w, per_tensor)[0].tolist() == [1, 3, 5, -1]
    bias = QuantParams(np.array([1e-3, 1e-4], np.float32), np.zeros(2, np.int32), 0, "int32")
    assert quantize_as(np.array([1.0, 1.0], np.float32), bias).tolist() == [1000, 10000]


def test_weight_sized_tensor_matches_onnxruntime() -> None:
    """A weight-shaped tensor with per-channel max scales (what the rewrite writes): no tie escapes."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 4096)) * 0.3).astype(np.float32)
    p = QuantParams((np.abs(w).max(1) / 127).astype(np.float32), np.zeros(64, np.int8), 0, "int8")
    want = ort_quantize(w, p.scale, p.zero_point, 0)
    np.testing.assert_array_equal(quantize_as(w, p), want)
    np.testing.assert_array_equal(fake_quantize_as(w, p), ort_dequantize(want, p.scale, p.zero_point, 0))


def test_formats_by_name() -> None:
    assert set(FORMATS) == {"int8", "uint8", "int32"}
    assert int_format("uint8") is UINT8 and INT8.limits(narrow=True) == (-127, 127)
    assert UINT8.limits(narrow=True) == (0, 255)
    with pytest.raises(ConfigError, match="int8"):
        int_format("int4")
