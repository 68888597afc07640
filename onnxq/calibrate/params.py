"""From a float range to quantization parameters, and the quantize/dequantize arithmetic of ONNX.

Symmetric (TensorRT): ``scale = amax / qmax`` with ``qmax = 127`` (narrow range: int8 codes -127..127
represent -amax..amax symmetrically; -128 stays unused), ``zero_point = 0``.

Asymmetric (onnxruntime uint8 activations): the range is first widened to contain 0 (zero must be
exactly representable: padding, ReLU outputs and zero-initialised accumulators rely on it), then
``scale = (hi - lo) / (qmax - qmin)`` and ``zero_point = round_half_even(qmin - lo / scale)`` clipped to
``[qmin, qmax]`` (onnxruntime's ``compute_scale_zp``).

``MIN_SCALE = 2**-23`` (float32 machine epsilon, the floor torch.ao.quantization observers use). Every
scale is at least this: a zero range (dead channel, all-zero activation) would otherwise give scale 0
and a division by zero in QuantizeLinear; a positive but tiny scale can be a float32 denormal that GPUs
flush to zero, or make ``1/scale`` or the bias scale ``s_x * s_w`` leave the normal float32 range. With
2**-23 the scale, its reciprocal and products of two scales are all normal float32 numbers. Tensors
with ``amax < 127 * 2**-23 ~ 1.5e-5`` lose resolution (not range), which is harmless at that size.

``quantize`` / ``dequantize`` follow ONNX QuantizeLinear / DequantizeLinear exactly in float32:
``q = saturate(round_half_even(x / scale) + zero_point)`` and ``y = (q - zero_point) * scale``.
"""

from __future__ import annotations

import math

import numpy as np

from onnxq.errors import CalibrationDataError, ConfigError

MIN_SCALE = 2.0**-23


def check_int_option(name: str, value: object, minimum: int) -> int:
    """Validate an integer calibration option (bools rejected); returns it as int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"calibration option {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_amax(amax: np.ndarray) -> None:
    if not np.all(np.isfinite(amax)) or np.any(amax < 0):
        raise CalibrationDataError(
            f"calibrated range {amax} is not finite and non-negative; check the calibration data for NaN/Inf"
        )


def symmetric_scale(amax: float | np.ndarray, qmax: int = 127) -> float | np.ndarray:
    """``max(amax / qmax, MIN_SCALE)`` for a scalar or per-channel array of absolute maxima."""
    a = np.asarray(amax, dtype=np.float64)
    _check_amax(a)
    scale = np.maximum(a / float(qmax), MIN_SCALE)
    return float(scale) if scale.ndim == 0 else scale


def asymmetric_params(lo: float, hi: float, qmin: int = 0, qmax: int = 255) -> tuple[float, int]:
    """(scale, zero_point) representing ``[min(lo, 0), max(hi, 0)]`` on the integer grid [qmin, qmax]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise CalibrationDataError(f"calibrated range [{lo}, {hi}] is not a finite interval; check the data")
    if qmax <= qmin:
        raise ConfigError(f"quantized range [{qmin}, {qmax}] is empty; qmax must exceed qmin")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max((hi - lo) / (qmax - qmin), MIN_SCALE)
    zero_point = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    return scale, zero_point


def _integer_dtype(qmin: int, qmax: int) -> np.dtype:
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return np.dtype(dtype)
    raise ConfigError(f"no integer type holds the quantized range [{qmin}, {qmax}]")


def _along(values: np.ndarray | float | int, ndim: int, axis: int | None, dtype: type) -> np.ndarray:
    """Reshape per-channel parameters to broadcast along ``axis`` of an ``ndim``-D tensor."""
    v = np.asarray(values, dtype=dtype)
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def quantize(
    x: np.ndarray,
    scale: float | np.ndarray,
    zero_point: int | np.ndarray = 0,
    axis: int | None = None,
    qmin: int = -128,
    qmax: int = 127,
) -> np.ndarray:
    """ONNX QuantizeLinear in numpy: float32 division, round half to even, add zero point, saturate.

    ``axis`` selects per-channel parameters (1-D ``scale``/``zero_point``); the result has the smallest
    integer dtype holding [qmin, qmax] (int8 for the defaults, uint8 for [0, 255]).
    """
    x = np.asarray(x, dtype=np.float32)
    s = _along(scale, x.ndim, axis, np.float32)
    zp = _along(zero_point, x.ndim, axis, np.float64)
    q = np.rint(x / s).astype(np.float64) + zp
    return np.clip(q, qmin, qmax).astype(_integer_dtype(qmin, qmax))


def dequantize(
    q: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray = 0, axis: int | None = None
) -> np.ndarray:
    """ONNX DequantizeLinear in numpy: ``(q - zero_point) * scale`` in float32."""
    q = np.asarray(q)
    s = _along(scale, q.ndim, axis, np.float32)
    zp = _along(zero_point, q.ndim, axis, np.int64)
    return ((q.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32)


def fake_quantize(
    x: np.ndarray,
    scale: float | np.ndarray,
    zero_point: int | np.ndarray = 0,
    axis: int | None = None,
    qmin: int = -128,
    qmax: int = 127,
) -> np.ndarray:
    """``dequantize(quantize(x))``: what a Q/DQ pair computes in float."""
    return dequantize(quantize(x, scale, zero_point, axis, qmin, qmax), scale, zero_point, axis)
