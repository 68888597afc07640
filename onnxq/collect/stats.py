"""Streaming per-tensor statistics: exact min/max, per-batch ranges and batch-invariant histograms.

A :class:`TensorStats` is everything calibration needs to know about one tensor; :func:`observe` adds a
batch to it (counting with :mod:`onnxq.collect.counting` on the grid of :mod:`onnxq.collect.grid`), and
:func:`merge_stats` joins two observations exactly, so the result does not depend on batching.

Signed statistics for asymmetric targets are kept as two anchored histograms, ``pos`` of ``x`` for
``x >= 0`` and ``neg`` of ``-x`` for ``x < 0``, each with its own exponent; ``merge(pos, neg)`` is exactly
the |x| histogram, so a TensorStats holds either ``hist`` or the pair, never both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from onnxq.collect.counting import as_flat_float, finite_minmax, scan
from onnxq.collect.grid import DEFAULT_NUM_BINS, Histogram, merge
from onnxq.errors import CalibrationDataError, ConfigError


def _ranges_array(ranges: np.ndarray | None) -> np.ndarray:
    """A read-only (batches, 2) float64 array; read-only float64 input is shared, anything else copied."""
    arr = np.zeros((0, 2)) if ranges is None else np.asarray(ranges, dtype=np.float64).reshape(-1, 2)
    if arr.flags.writeable:
        arr = arr.copy()
        arr.flags.writeable = False
    return arr


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class TensorStats:
    """Everything calibration needs to know about one tensor, O(num_bins + num_batches) in size.

    Modes: min/max only (``hist`` and ``pos``/``neg`` None), |x| histogram (``hist``), or signed
    histograms (``pos`` of x >= 0 and ``neg`` of -x for x < 0, for asymmetric targets).
    ``batch_ranges`` has one (min, max) row per observed batch, for per-batch aggregation.
    An unobserved tensor has count 0, min +inf and max -inf (the identity of ``merge_stats``).
    """

    num_bins: int = DEFAULT_NUM_BINS
    count: int = 0
    min: float = math.inf
    max: float = -math.inf
    hist: Histogram | None = None
    pos: Histogram | None = None
    neg: Histogram | None = None
    batch_ranges: np.ndarray = field(default_factory=lambda: _ranges_array(None))

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_ranges", _ranges_array(self.batch_ranges))
        if self.hist is not None and (self.pos is not None or self.neg is not None):
            raise CalibrationDataError("TensorStats holds either hist or pos/neg histograms, not both")
        if (self.pos is None) != (self.neg is None):
            raise CalibrationDataError("TensorStats signed histograms need both pos and neg")
        for h in (self.hist, self.pos, self.neg):
            if h is not None and h.num_bins != self.num_bins:
                raise CalibrationDataError(f"histogram has {h.num_bins} bins, stats say {self.num_bins}")

    @property
    def has_histogram(self) -> bool:
        return self.hist is not None or self.pos is not None

    @property
    def signed(self) -> bool:
        return self.pos is not None

    @property
    def absmax(self) -> float:
        """max |x| over everything observed (0.0 when nothing was)."""
        return max(-self.min, self.max, 0.0) if self.count else 0.0

    @property
    def abs_hist(self) -> Histogram | None:
        """The |x| histogram, whichever mode the statistics were collected in."""
        if self.pos is not None and self.neg is not None:
            return merge(self.pos, self.neg)
        return self.hist

    @property
    def num_batches(self) -> int:
        return int(self.batch_ranges.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorStats):
            return NotImplemented
        fields = ("num_bins", "count", "min", "max", "hist", "pos", "neg")
        same = all(getattr(self, f) == getattr(other, f) for f in fields)
        return same and np.array_equal(self.batch_ranges, other.batch_ranges)

    __hash__ = None  # type: ignore[assignment]


def new_stats(
    num_bins: int = DEFAULT_NUM_BINS, *, histogram: bool = True, signed: bool = False
) -> TensorStats:
    """Empty statistics: min/max only (``histogram=False``), |x| histogram, or signed histograms."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ConfigError(f"num_bins must be an integer >= 2, got {num_bins!r}; 2048 is the usual choice")
    num_bins = int(num_bins)
    if not histogram:
        return TensorStats(num_bins)
    if signed:
        return TensorStats(num_bins, pos=Histogram.empty(num_bins), neg=Histogram.empty(num_bins))
    return TensorStats(num_bins, hist=Histogram.empty(num_bins))


def observe(stats: TensorStats, x: np.ndarray) -> TensorStats:
    """Statistics of everything in ``stats`` plus the batch ``x`` (any shape; the collector's call).

    Pure: returns a new TensorStats and leaves ``stats`` unchanged (the copy is O(num_bins +
    num_batches), negligible next to reading x). An empty ``x`` adds nothing, not even a batch row.
    Raises CalibrationDataError for NaN or infinite values.
    """
    flat = as_flat_float(x)
    if flat.size == 0:
        return stats
    hist = pos = neg = None
    if stats.signed:
        lo, hi, (pos, neg) = scan(flat, stats.num_bins, signed=True)
    elif stats.has_histogram:
        lo, hi, (hist,) = scan(flat, stats.num_bins, signed=False)
    else:
        lo, hi = finite_minmax(flat)
    batch = TensorStats(stats.num_bins, int(flat.size), lo, hi, hist, pos, neg, _frozen(np.array([[lo, hi]])))
    return merge_stats(stats, batch)


def merge_stats(a: TensorStats, b: TensorStats) -> TensorStats:
    """Statistics of the union of two disjoint observations (batch rows of ``a`` first, then ``b``)."""
    if a.num_bins != b.num_bins or a.has_histogram != b.has_histogram or a.signed != b.signed:
        raise CalibrationDataError(
            "cannot merge statistics collected with different settings "
            f"(num_bins {a.num_bins}/{b.num_bins}, histogram {a.has_histogram}/{b.has_histogram}, "
            f"signed {a.signed}/{b.signed}); collect them with the same settings"
        )

    def both(h1: Histogram | None, h2: Histogram | None) -> Histogram | None:
        return None if h1 is None or h2 is None else merge(h1, h2)

    return TensorStats(
        a.num_bins,
        a.count + b.count,
        min(a.min, b.min),
        max(a.max, b.max),
        both(a.hist, b.hist),
        both(a.pos, b.pos),
        both(a.neg, b.neg),
        _frozen(np.concatenate([a.batch_ranges, b.batch_ranges])),
    )
