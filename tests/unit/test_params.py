"""Scales, zero points and the quantize/dequantize arithmetic, checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.calibrate.params import (
    MIN_SCALE,
    asymmetric_params,
    dequantize,
    fake_quantize,
    quantize,
    symmetric_scale,
)
from onnxq.errors import CalibrationDataError, ConfigError


def run_qdq(
    x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's QuantizeLinear output and DequantizeLinear of it (opset 13)."""
    qtype = helper.np_dtype_to_tensor_dtype(zp.dtype)
    attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("q", qtype, list(x.shape)),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        initializer=[numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "zp")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q, y = sess.run(None, {"x": x})
    return q, y


def _inputs(rng: np.random.Generator, shape: tuple[int, ...], scale: np.ndarray) -> np.ndarray:
    """Random values plus exact ties (k + 1/2) * scale, and values far outside the range."""
    x = rng.uniform(-200, 200, shape).astype(np.float32) * np.float32(np.max(scale))
    flat = x.reshape(-1)
    ties = (rng.integers(-130, 130, flat.size // 3) + 0.5).astype(np.float32)
    flat[: ties.size] = ties * np.float32(np.max(scale))
    return x


@pytest.mark.parametrize("dtype,qmin,qmax", [(np.int8, -128, 127), (np.uint8, 0, 255)])
def test_per_tensor_matches_onnxruntime(dtype: type, qmin: int, qmax: int) -> None:
    rng = np.random.default_rng(0)
    scale = np.array(0.0625, np.float32)  # a power of two: ties are exact in float32
    zp = np.array(3 if dtype == np.int8 else 130, dtype)
    x = _inputs(rng, (4, 7, 5), scale)
    q_ref, y_ref = run_qdq(x, scale, zp, None)
    q = quantize(x, scale, int(zp), None, qmin, qmax)
    assert q.dtype == dtype
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(dequantize(q, scale, int(zp)), y_ref)
    np.testing.assert_array_equal(fake_quantize(x, scale, int(zp), None, qmin, qmax), y_ref)


@pytest.mark.parametrize("dtype,qmin,qmax", [(np.int8, -128, 127), (np.uint8, 0, 255)])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_axis_matches_onnxruntime(dtype: type, qmin: int, qmax: int, axis: int) -> None:
    rng = np.random.default_rng(1)
    shape = (3, 4, 6)
    channels = shape[axis]
    scale = rng.uniform(0.01, 0.3, channels).astype(np.float32)  # arbitrary float32 scales
    low, high = (-5, 5) if dtype == np.int8 else (100, 150)
    zp = rng.integers(low, high, channels).astype(dtype)
    x = rng.uniform(-40, 40, shape).astype(np.float32)
    q_ref, y_ref = run_qdq(x, scale, zp, axis)
    q = quantize(x, scale, zp, axis, qmin, qmax)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(dequantize(q, scale, zp, axis), y_ref)


def test_rounding_is_half_to_even_by_hand() -> None:
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 0.49999997, 126.5, 127.5, 200.0, -200.0], np.float32)
    expected = [0, 2, 2, 4, 0, -2, -2, 0, 126, 127, 127, -128]
    assert quantize(x, 1.0).tolist() == expected
    u8 = quantize(np.array([0.5, 1.5, 254.5, 300.0, -3.0], np.float32), 1.0, 0, None, 0, 255)
    assert u8.tolist() == [0, 2, 254, 255, 0]
    assert quantize(np.array([2.5], np.float32), 1.0, 10).tolist() == [12]  # round first, then add zp


def test_symmetric_scale() -> None:
    assert symmetric_scale(12.7) == pytest.approx(0.1)
    assert symmetric_scale(0.0) == MIN_SCALE
    assert symmetric_scale(1e-12) == MIN_SCALE
    np.testing.assert_allclose(symmetric_scale(np.array([127.0, 0.0, 254.0])), [1.0, MIN_SCALE, 2.0])
    assert symmetric_scale(255.0, qmax=255) == 1.0
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(CalibrationDataError):
            symmetric_scale(bad)


def test_min_scale_is_a_safe_float32() -> None:
    s = np.float32(MIN_SCALE)
    assert float(s) == MIN_SCALE  # exactly representable
    tiny = np.finfo(np.float32).tiny
    assert s >= tiny and np.float32(1) / s < np.finfo(np.float32).max
    assert s * s >= tiny  # products of two scales (bias scale) stay normal


def test_asymmetric_params_by_hand() -> None:
    scale, zp = asymmetric_params(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zp == 64  # round(63.75)
    assert asymmetric_params(1.0, 3.0) == (3 / 255, 0)  # range widened to include 0
    assert asymmetric_params(-3.0, -1.0) == (3 / 255, 255)
    assert asymmetric_params(-2.0, 2.0, -128, 127) == (4 / 255, 0)  # round(-127.5 - -128) -> half to even
    assert asymmetric_params(0.0, 0.0) == (MIN_SCALE, 0)
    with pytest.raises(CalibrationDataError):
        asymmetric_params(2.0, 1.0)
    with pytest.raises(ConfigError):
        asymmetric_params(-1.0, 1.0, 5, 5)


@pytest.mark.parametrize("lo,hi", [(-1.0, 3.0), (-0.37, 5.11), (-7.3, 0.2), (0.5, 2.0), (-1e-3, 1e3)])
def test_zero_is_exactly_representable(lo: float, hi: float) -> None:
    scale, zp = asymmetric_params(lo, hi)
    assert 0 <= zp <= 255
    assert fake_quantize(np.zeros(1, np.float32), scale, zp, None, 0, 255)[0] == 0.0
    x = np.linspace(min(lo, 0), max(hi, 0), 1001, dtype=np.float32)
    err = np.abs(fake_quantize(x, scale, zp, None, 0, 255) - x)
    assert err.max() <= scale * 0.5 + 1e-6 * max(abs(lo), abs(hi))  # no clipping inside the range
