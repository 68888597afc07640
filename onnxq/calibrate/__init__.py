"""Calibration math: pure functions from statistics to ranges and quantization parameters.

Each calibrator is a pure function of a histogram (or, for minmax, of TensorStats) returning ``amax``;
``solve_range`` dispatches by method name and handles symmetric and asymmetric targets; ``params``
turns ranges into scales and zero points; ``weights`` calibrates weights from their values.
"""

from onnxq.calibrate.entropy import amax_entropy, kl_divergences
from onnxq.calibrate.minmax import BATCH_STATISTICS, aggregate_batch_ranges, amax_minmax
from onnxq.calibrate.mse import amax_mse, mse_errors
from onnxq.calibrate.params import MIN_SCALE, asymmetric_params, symmetric_scale
from onnxq.calibrate.percentile import amax_percentile
from onnxq.calibrate.ranges import METHODS, solve_range
from onnxq.calibrate.weights import WEIGHT_METHODS, weight_amax

__all__ = [
    "BATCH_STATISTICS",
    "METHODS",
    "MIN_SCALE",
    "WEIGHT_METHODS",
    "aggregate_batch_ranges",
    "amax_entropy",
    "amax_minmax",
    "amax_mse",
    "amax_percentile",
    "asymmetric_params",
    "kl_divergences",
    "mse_errors",
    "solve_range",
    "symmetric_scale",
    "weight_amax",
]
