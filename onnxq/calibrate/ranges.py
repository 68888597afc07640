"""Solve one tensor's float range from its statistics with a named calibration method.

Symmetric targets get ``(-amax, amax)`` with ``amax`` computed on the |x| histogram. Asymmetric targets
treat each side on its own: minmax gives ``(min(min, 0), max(max, 0))``; a histogram method is applied to
the ``pos`` histogram (values >= 0) for the upper end and to the ``neg`` histogram (-x for x < 0) for the
lower end. Every histogram result is clamped to the observed extreme on its side: a histogram can only
place a threshold to bin resolution (entropy even puts it half a bin past the kept bins), and there is
nothing to represent beyond what was seen; for a constant tensor this gives exactly its value.
"""

from __future__ import annotations

from collections.abc import Callable

from onnxq.calibrate.entropy import amax_entropy
from onnxq.calibrate.minmax import aggregate_batch_ranges
from onnxq.calibrate.mse import amax_mse
from onnxq.calibrate.percentile import amax_percentile
from onnxq.collect.grid import Histogram
from onnxq.collect.stats import TensorStats
from onnxq.errors import CalibrationDataError, ConfigError

HISTOGRAM_METHODS: dict[str, Callable[..., float]] = {
    "entropy": amax_entropy,
    "mse": amax_mse,
    "percentile": amax_percentile,
}
METHODS = ("minmax", *HISTOGRAM_METHODS)
OPTIONS: dict[str, tuple[str, ...]] = {
    "minmax": ("statistic",),
    "entropy": ("start_bin", "levels", "stride"),
    "mse": ("levels", "start_bin", "stride"),
    "percentile": ("percentile",),
}


def _check(method: str, options: dict[str, object]) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(OPTIONS[method]))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for calibration method {method!r}; "
            f"it accepts: {', '.join(OPTIONS[method])}"
        )


def _side(fn: Callable[..., float], hist: Histogram, observed: float, options: dict[str, object]) -> float:
    """Histogram method on one side, clamped to the observed extreme of that side (>= 0)."""
    if observed <= 0.0 or hist.total == 0:
        return 0.0
    return min(fn(hist, **options), observed)


def solve_range(
    stats: TensorStats, method: str, *, symmetric: bool, **options: object
) -> tuple[float, float]:
    """The (lo, hi) float range the quantizer should represent for this tensor.

    ``method`` is one of METHODS; ``options`` go to it (minmax: ``statistic`` max|mean|median|modal;
    entropy: start_bin, levels, stride; mse: levels, start_bin, stride; percentile: percentile).
    """
    _check(method, options)
    if stats.count == 0:
        raise CalibrationDataError("no values were observed for this tensor; check the calibration run")
    if method == "minmax":
        lo, hi = aggregate_batch_ranges(stats.batch_ranges, str(options.get("statistic", "max")))
        if symmetric:
            amax = max(-lo, hi, 0.0)
            return -amax, amax
        return min(lo, 0.0), max(hi, 0.0)
    fn = HISTOGRAM_METHODS[method]
    if not stats.has_histogram:
        raise ConfigError(
            f"calibration method {method!r} needs histograms but these statistics hold only min/max; "
            "collect them with histograms enabled or use method 'minmax'"
        )
    if symmetric:
        amax = _side(fn, stats.abs_hist, stats.absmax, options)
        return -amax, amax
    if not stats.signed or stats.pos is None or stats.neg is None:
        raise ConfigError(
            f"asymmetric {method!r} calibration needs signed histograms but these statistics hold |x| only; "
            "collect them with signed histograms (asymmetric targets do) or use a symmetric target"
        )
    hi = _side(fn, stats.pos, stats.max, options)
    lo = _side(fn, stats.neg, -stats.min, options)
    return (-lo if lo else 0.0), hi
