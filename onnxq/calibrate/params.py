"""From a float range to quantization parameters (scale and zero point).

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

What the parameters then do to values (quantize, dequantize) is :mod:`onnxq.formats`'s one arithmetic.
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
