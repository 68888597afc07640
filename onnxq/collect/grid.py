"""The anchored histogram grid: ``Histogram``, its exponent, and exact merging.

The grid. A histogram has ``n`` bins of width ``w = 2**e`` anchored at 0: bin ``j`` holds the values with
``j*w <= |x| < (j+1)*w``, i.e. ``j = floor(|x| * 2**-e)``. For data with absolute maximum ``a`` the exponent
is the smallest ``e`` with ``a < n * 2**e`` (strict), clamped below at ``MIN_EXPONENT``.

Why the result does not depend on batching. ``floor(floor(y) / 2) == floor(y / 2)``, so the grid of
exponent ``e + 1`` is obtained from the grid of exponent ``e`` by adding adjacent bin pairs
(``counts.reshape(-1, 2).sum(1)``, zero padded). Every grid refines the coarser ones, and the exponent of a
union of batches is the maximum of their exponents (``max`` commutes with the clamp). Multiplying by a
power of two is exact in binary floating point, so ``|x| * 2**-e`` is computed without rounding and every
value lands in exactly the bin that exact arithmetic gives. Hence the final histogram (counts *and*
exponent) is identical for any batch size, split or order of the same samples. Counting
(:mod:`onnxq.collect.counting`) relies on the same property inside one batch: it processes a large tensor
in cache-sized chunks, each with its own exponent, and merges them; the result equals a one-shot
histogram of the whole tensor.

Why ``MIN_EXPONENT = -127``: the bin index is computed in float32 for float16/float32 data, and the
multiplier ``2**-e`` must be a finite float32, so ``-e <= 127``. All-zero data (and data below
``num_bins * 2**-127``) uses that exponent; calibrators then return a tiny or zero amax that
``onnxq.calibrate.params`` turns into its minimum scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onnxq.errors import CalibrationDataError

DEFAULT_NUM_BINS = 2048
MIN_EXPONENT = -127


def exponent_for(absmax: float, num_bins: int) -> int:
    """Smallest ``e >= MIN_EXPONENT`` with ``absmax < num_bins * 2**e`` (exact, no log rounding)."""
    if not absmax > 0.0:
        return MIN_EXPONENT
    e = math.frexp(absmax)[1] - (num_bins - 1).bit_length()
    while math.ldexp(absmax, -e) >= num_bins:
        e += 1
    while e > MIN_EXPONENT and math.ldexp(absmax, -(e - 1)) < num_bins:
        e -= 1
    return max(e, MIN_EXPONENT)


@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts of |x| on the anchored grid ``[j * 2**exponent, (j+1) * 2**exponent)``, j < len(counts).

    ``counts`` is a read-only int64 copy. Equality compares exponent and counts exactly.
    """

    counts: np.ndarray
    exponent: int

    def __post_init__(self) -> None:
        counts = np.array(self.counts, dtype=np.int64).reshape(-1)
        if counts.size < 2 or (counts < 0).any():
            raise CalibrationDataError("a histogram needs at least 2 bins and non-negative counts")
        counts.flags.writeable = False
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "exponent", int(self.exponent))

    @classmethod
    def _trusted(cls, counts: np.ndarray, exponent: int) -> Histogram:
        """Wrap a fresh int64 array without copying or validating it (fast path of merge and counting)."""
        hist = object.__new__(cls)
        counts.flags.writeable = False
        object.__setattr__(hist, "counts", counts)
        object.__setattr__(hist, "exponent", exponent)
        return hist

    @classmethod
    def empty(cls, num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
        """The identity of ``merge``: no counts, smallest grid."""
        return cls(np.zeros(num_bins, np.int64), MIN_EXPONENT)

    @property
    def num_bins(self) -> int:
        return int(self.counts.size)

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def top_bin(self) -> int:
        """Index of the highest non-empty bin, -1 when empty."""
        nz = np.flatnonzero(self.counts)
        return int(nz[-1]) if nz.size else -1

    def coarsen(self, exponent: int) -> Histogram:
        """The same data on the coarser grid ``exponent`` (merging 2**(exponent - self.exponent) bins)."""
        if exponent < self.exponent:
            raise ValueError(f"cannot refine a histogram from exponent {self.exponent} to {exponent}")
        return Histogram(coarsen_counts(self.counts, exponent - self.exponent), exponent)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.exponent == other.exponent and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Histogram(num_bins={self.num_bins}, exponent={self.exponent}, total={self.total})"


def coarsen_counts(counts: np.ndarray, shift: int) -> np.ndarray:
    """Counts after ``shift`` pair-merges: new bin j = sum of old bins j*2**shift ... (j+1)*2**shift - 1.

    ``shift == 0`` returns ``counts`` itself (callers only read it or add it into a new array).
    """
    n = counts.size
    if shift <= 0:
        return counts
    out = np.zeros(n, np.int64)
    if shift >= (n - 1).bit_length():  # every old index j < n has j >> shift == 0
        out[0] = counts.sum()
        return out
    group = 1 << shift
    padded = np.zeros(-(-n // group) * group, np.int64)
    padded[:n] = counts
    merged = padded.reshape(-1, group).sum(axis=1)
    out[: merged.size] = merged
    return out


def merge(a: Histogram, b: Histogram) -> Histogram:
    """Histogram of the union of the data of ``a`` and ``b`` (exact; commutative and associative)."""
    if a.num_bins != b.num_bins:
        raise CalibrationDataError(
            f"cannot merge histograms with {a.num_bins} and {b.num_bins} bins; "
            "collect all statistics with the same num_bins"
        )
    e = max(a.exponent, b.exponent)
    counts = coarsen_counts(a.counts, e - a.exponent) + coarsen_counts(b.counts, e - b.exponent)
    return Histogram._trusted(counts, e)
