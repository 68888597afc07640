"""Max calibration and the per-batch aggregation of (min, max) ranges.

``amax_minmax`` is the absolute maximum of everything observed: exact from TensorStats, or the right
edge of the highest non-empty bin from a Histogram (an upper bound within one bin width; the other
calibrators use it as their no-clipping fallback).

``aggregate_batch_ranges`` combines one (min, max) row per calibration batch:

* ``max``: global min and max (what ``amax_minmax`` gives; independent of batching);
* ``mean`` / ``median``: mean / median of the per-batch mins and of the per-batch maxes (onnxruntime's
  moving-average idea without its order dependence; these *do* depend on how samples are batched);
* ``modal``: each side separately, the most common per-batch magnitude rounded up to a power of two
  (``2**ceil(log2 |v|)``, 0 stays 0), ties going to the larger value; the range returned contains 0.
  This is the idea of Vitis AI / Quark's power-of-two "MostCommon" mode: a range most batches agree on,
  which ignores rare outlier batches, on the grid a power-of-two scale can express.
"""

from __future__ import annotations

import numpy as np

from onnxq.collect.grid import Histogram
from onnxq.collect.stats import TensorStats
from onnxq.errors import CalibrationDataError, ConfigError

BATCH_STATISTICS = ("max", "mean", "median", "modal")


def amax_minmax(stats: TensorStats | Histogram) -> float:
    """max |x|: exact from TensorStats, right edge of the highest non-empty bin from a Histogram."""
    if isinstance(stats, Histogram):
        return (stats.top_bin + 1) * stats.width
    return stats.absmax


def _pow2_ceil(v: np.ndarray) -> np.ndarray:
    """2**ceil(log2 v) elementwise for v >= 0 (exact, via frexp), 0 for 0."""
    mant, exp = np.frexp(v)
    return np.where(v > 0, np.ldexp(1.0, np.where(mant == 0.5, exp - 1, exp)), 0.0)


def _mode_largest(values: np.ndarray) -> float:
    uniq, counts = np.unique(values, return_counts=True)
    return float(uniq[np.flatnonzero(counts == counts.max())[-1]])


def aggregate_batch_ranges(ranges: np.ndarray, statistic: str = "max") -> tuple[float, float]:
    """Combine per-batch (min, max) rows into one (lo, hi) range with ``statistic`` (module docstring)."""
    r = np.asarray(ranges, dtype=np.float64).reshape(-1, 2)
    if statistic not in BATCH_STATISTICS:
        choices = ", ".join(BATCH_STATISTICS)
        raise ConfigError(f"unknown batch statistic {statistic!r}; choose one of {choices}")
    if r.shape[0] == 0:
        raise CalibrationDataError("no calibration batch was observed for this tensor; feed at least one")
    lo, hi = r[:, 0], r[:, 1]
    if statistic == "max":
        return float(lo.min()), float(hi.max())
    if statistic == "mean":
        return float(lo.mean()), float(hi.mean())
    if statistic == "median":
        return float(np.median(lo)), float(np.median(hi))
    neg = _mode_largest(_pow2_ceil(np.maximum(-lo, 0.0)))
    pos = _mode_largest(_pow2_ceil(np.maximum(hi, 0.0)))
    return (-neg if neg else 0.0), pos
