"""Quantization formats and their one arithmetic: real -> integer grid -> real, as onnxruntime computes it.

Every piece of onnxq that fake-quantizes (the rewrite's int8 weights and int32 biases, the gated model of
sensitivity analysis, bias correction, the weight MSE search) calls this module, so the numbers it
predicts are the numbers the written model computes.

A format is an integer grid ``[qmin, qmax]`` stored in a numpy dtype. For per-tensor parameters or,
with ``axis``, one scale and zero point per slice along that axis:

    QuantizeLinear    q = saturate(round_half_even(x / scale) + zero_point)       x / scale in float32
    DequantizeLinear  y = (q - zero_point) * scale                                in float32

Established against onnxruntime's CPU kernels (MLAS), which ``tests/unit/core/test_formats.py`` runs on
random tensors and near-ties, bit for bit:

* ``x / scale`` is a float32 division. Neither ``x * (1 / scale)`` (what a reciprocal would give) nor a
  float64 division matches: on values within two ulps of ``(k + 1/2) * scale`` each disagrees with
  onnxruntime on about a tenth of them, the float32 division on none.
* The quotient is clamped to ``[qmin - zero_point, qmax - zero_point]`` before rounding, then rounded
  half to even, then the zero point is added. This equals rounding first and saturating after (the
  bounds are integers), but it fixes what NaN becomes: the clamp takes the bound for NaN, so NaN
  quantizes to ``qmin`` (MLAS's ``max(x, lo)`` returns ``lo`` for NaN). Infinities saturate.
* Tiny scales (down to float32 denormals) are divided as they are: no flush to zero.
* The dequantized value is the float32 product of ``float(q - zero_point)`` and the scale.

Exactness here: for grids within +-2**24 (8- and 16-bit formats) the clamp, rounding and zero point
are exact in float32, so the grid values are computed in float32 (half the memory of float64 on large
weights); wider grids (int32 biases) clamp in float64, where the int32 limits are exact. onnxruntime
has no int32 QuantizeLinear; int32 biases follow the same rule (its own quantizer also divides the bias
by its scale in float32).

``narrow``: a signed grid without its lowest code (int8 weights written as integers use -127..127, so
the grid is symmetric; onnxruntime's QuantizeLinear in a graph always saturates to the full range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxq.errors import ConfigError
from onnxq.records.params import QuantParams

_FLOAT32_EXACT = 2**24  # every integer of magnitude up to this is a float32


@dataclass(frozen=True)
class IntFormat:
    """An integer grid: its ONNX name, limits and numpy storage type."""

    name: str
    qmin: int
    qmax: int
    numpy: type

    def limits(self, narrow: bool = False) -> tuple[int, int]:
        """``(qmin, qmax)``; ``narrow`` drops the lowest code of a signed grid (``qmin = -qmax``)."""
        return (-self.qmax if narrow and self.qmin < 0 else self.qmin), self.qmax


INT8 = IntFormat("int8", -128, 127, np.int8)
UINT8 = IntFormat("uint8", 0, 255, np.uint8)
INT32 = IntFormat("int32", -(2**31), 2**31 - 1, np.int32)
FORMATS: dict[str, IntFormat] = {f.name: f for f in (INT8, UINT8, INT32)}


def int_format(name: str) -> IntFormat:
    """The format called ``name`` ("int8", "uint8", "int32")."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown quantized type {name!r}; choose one of {', '.join(FORMATS)}") from None


def _storage(qmin: int, qmax: int) -> type:
    """The smallest format dtype holding ``[qmin, qmax]``."""
    for fmt in (INT8, UINT8, INT32):
        if fmt.qmin <= qmin and qmax <= fmt.qmax:
            return fmt.numpy
    raise ConfigError(f"no integer type holds the quantized range [{qmin}, {qmax}]")


def _along(values: np.ndarray | float, ndim: int, axis: int | None, dtype: type) -> np.ndarray:
    """Per-channel parameters reshaped to broadcast along ``axis`` of an ``ndim``-D tensor (a scalar,
    or ``axis=None``, stays as it is: per-tensor)."""
    v = np.asarray(values, dtype=dtype)
    if axis is None or v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def _grid(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """The integer codes of ``x`` as a float array (float32 for narrow grids, else float64)."""
    t = x / scale  # float32 / float32: onnxruntime's division
    wide = max(-qmin, qmax) + int(np.max(np.abs(zp), initial=0)) > _FLOAT32_EXACT
    work = np.float64 if wide else np.float32
    lo, hi = (qmin - zp).astype(work), (qmax - zp).astype(work)
    # fmax/fmin return the bound for NaN, as MLAS's clamp does; rint rounds half to even
    t = np.rint(np.fmin(np.fmax(t.astype(work, copy=False), lo), hi))
    return t + zp.astype(work) if np.any(zp) else t


def quantize(
    x: np.ndarray,
    scale: float | np.ndarray,
    zero_point: int | np.ndarray = 0,
    axis: int | None = None,
    qmin: int = -128,
    qmax: int = 127,
) -> np.ndarray:
    """ONNX QuantizeLinear: the codes of ``x`` on ``[qmin, qmax]`` in the smallest dtype holding it.

    ``scale`` and ``zero_point`` are scalars, or 1-D along ``axis`` (per channel).
    """
    x = np.asarray(x, dtype=np.float32)
    s = _along(scale, x.ndim, axis, np.float32)
    zp = _along(zero_point, x.ndim, axis, np.int64)
    return _grid(x, s, zp, qmin, qmax).astype(_storage(qmin, qmax))


def dequantize(
    q: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray = 0, axis: int | None = None
) -> np.ndarray:
    """ONNX DequantizeLinear: ``float32(q - zero_point) * scale`` in float32."""
    q = np.asarray(q)
    s = _along(scale, q.ndim, axis, np.float32)
    zp = _along(zero_point, q.ndim, axis, np.int64)
    return (q.astype(np.int64) - zp).astype(np.float32) * s


def fake_quantize(
    x: np.ndarray,
    scale: float | np.ndarray,
    zero_point: int | np.ndarray = 0,
    axis: int | None = None,
    qmin: int = -128,
    qmax: int = 127,
) -> np.ndarray:
    """``dequantize(quantize(x))`` in float32: what a Q/DQ pair makes of ``x``."""
    x = np.asarray(x, dtype=np.float32)
    s = _along(scale, x.ndim, axis, np.float32)
    zp = _along(zero_point, x.ndim, axis, np.int64)
    codes = _grid(x, s, zp, qmin, qmax)
    if codes.dtype == np.float32:  # codes and code - zp are exact float32 integers: skip the int round trip
        return (codes - zp.astype(np.float32) if np.any(zp) else codes) * s
    return dequantize(codes.astype(_storage(qmin, qmax)), s, zp)


def _params_axis(x: np.ndarray, p: QuantParams) -> int | None:
    """The axis ``p`` applies along to ``x``: per channel only for 1-D scales of a non-scalar tensor."""
    return p.axis if p.axis is not None and x.ndim > 0 and np.ndim(p.scale) == 1 else None


def quantize_as(x: np.ndarray, p: QuantParams, *, narrow: bool = False) -> np.ndarray:
    """``x`` quantized with ``p`` into ``p.dtype`` (``narrow``: see the module docstring)."""
    fmt = int_format(p.dtype)
    qmin, qmax = fmt.limits(narrow)
    return quantize(x, p.scale, p.zero_point, _params_axis(np.asarray(x), p), qmin, qmax).astype(fmt.numpy)


def fake_quantize_as(x: np.ndarray, p: QuantParams, *, narrow: bool = False) -> np.ndarray:
    """``dequantize(quantize_as(x, p))``: float32, what the model computes from ``x`` through ``p``."""
    qmin, qmax = int_format(p.dtype).limits(narrow)
    return fake_quantize(x, p.scale, p.zero_point, _params_axis(np.asarray(x), p), qmin, qmax)
