"""Per-channel (or per-tensor) absolute maxima of weights, for symmetric int8 weight quantization.

Weights are known exactly, so no histogram is needed: each method works on the real values.

* ``max``: ``max |w|`` per channel (TensorRT's and onnxruntime's default; no clipping).
* ``percentile``: the ``percentile`` % quantile of |w| per channel, linearly interpolated between the
  sorted values (numpy's default ``linear`` method: position ``p/100 * (n - 1)`` among the ``n`` sorted
  |w|). Why interpolate: a channel holds few weights (a 3x3 conv over 16 channels: 144), and the
  smallest actual value with that fraction at or below it (``inverted_cdf``) is the maximum itself for
  any channel under 100 / (100 - p) weights (10 000 at 99.99), so the method changed nothing on most
  layers. Interpolated, 99.99 on 144 weights clips 1.4 % of the way from the largest to the second
  largest |w|: always below the max when the two differ, and ``percentile=100`` is the max.
* ``mse``: per channel, ``amax = r * max|w|`` for ``r`` on ``linspace(min_ratio, 1, num_candidates)``
  minimising ``sum (w - fake_quant(w, amax))**2`` with ``scale = amax / qmax`` and the arithmetic of
  QuantizeLinear (:func:`onnxq.formats.fake_quantize`: float32 division, round half to even).
  All channels are searched at once, one candidate ratio at a time (memory: two copies of the weight).
  Ties go to the largest ratio (least clipping).

``axis`` is the channel axis (Conv 0, Gemm 0 if transB else 1, MatMul the last, ConvTranspose 1: see
notes/peers-and-algorithms.md 2.6); ``axis=None`` gives one value for the whole tensor (shape ``()``).
Dead channels give 0; ``params.symmetric_scale`` turns that into its minimum scale.
"""

from __future__ import annotations

import numpy as np

from onnxq.calibrate.params import check_int_option
from onnxq.errors import ConfigError, UnsupportedModelError
from onnxq.formats import fake_quantize

WEIGHT_METHODS = ("max", "mse", "percentile")


def _channels(w: np.ndarray, axis: int | None) -> np.ndarray:
    """|w| as a (channels, elements) float array."""
    a = np.abs(np.asarray(w, dtype=np.float64 if np.asarray(w).dtype == np.float64 else np.float32))
    if a.size == 0:
        raise UnsupportedModelError("cannot calibrate an empty weight tensor; remove it or exclude its node")
    if not np.all(np.isfinite(a)):
        raise UnsupportedModelError("the weight tensor has NaN or infinite values and cannot be quantized")
    if axis is None:
        return a.reshape(1, -1)
    if not -a.ndim <= axis < a.ndim:
        raise ConfigError(f"axis {axis} is out of range for a weight of shape {a.shape}")
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)


def _mse(a: np.ndarray, qmax: int, num_candidates: int, min_ratio: float) -> np.ndarray:
    top = a.max(axis=1).astype(np.float64)
    best_err = np.full(a.shape[0], np.inf)
    best = top.copy()
    for r in np.linspace(1.0, min_ratio, num_candidates):  # from 1 down: ties keep the larger ratio
        amax = top * r
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        # |w| suffices: the grid is symmetric. The values QuantizeLinear would give, as the written model.
        err = a - fake_quantize(a, scale, 0, 0, -qmax, qmax)
        total = np.einsum("ij,ij->i", err, err, dtype=np.float64)
        better = total < best_err
        best_err[better], best[better] = total[better], amax[better]
    return best


def weight_amax(w: np.ndarray, axis: int | None = None, method: str = "max", **options: object) -> np.ndarray:
    """Absolute maximum to quantize ``w`` with, per channel along ``axis`` (float64 array).

    Options: percentile (``percentile``=99.99); mse (``qmax``=127, ``num_candidates``=81,
    ``min_ratio``=0.2).
    """
    allowed = {"max": (), "percentile": ("percentile",), "mse": ("qmax", "num_candidates", "min_ratio")}
    if method not in allowed:
        choices = ", ".join(WEIGHT_METHODS)
        raise ConfigError(f"unknown weight calibration method {method!r}; choose one of {choices}")
    unknown = sorted(set(options) - set(allowed[method]))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for weight method {method!r}")
    a = _channels(w, axis)
    if method == "max":
        out = a.max(axis=1)
    elif method == "percentile":
        p = options.get("percentile", 99.99)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
            raise ConfigError(f"percentile must be a number in (0, 100], got {p!r}")
        out = np.percentile(a, float(p), axis=1, method="linear")
    else:
        qmax = check_int_option("qmax", options.get("qmax", 127), 1)
        num = check_int_option("num_candidates", options.get("num_candidates", 81), 1)
        min_ratio = options.get("min_ratio", 0.2)
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) or not 0 < min_ratio <= 1:
            raise ConfigError(f"min_ratio must be a number in (0, 1], got {min_ratio!r}")
        out = _mse(a, qmax, num, float(min_ratio))
    out = np.asarray(out, dtype=np.float64)
    return out.reshape(()) if axis is None else out
