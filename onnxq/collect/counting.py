"""Counting a tensor into histograms on the anchored grid (:mod:`onnxq.collect.grid`), fast.

Float16 data is widened to float32 and integer data to float64 (both exact); float64 data is binned in
float64, so every value lands in the bin exact arithmetic gives (the grid's module docstring says why that
makes the counts independent of batching and chunking).

Speed. ``scan`` makes one pass over each chunk for min/max (which also detects NaN/Inf: both
propagate through min and max), then counts it: with the compiled kernel (``_counting.c``, built at
install time where a C compiler exists) in one more pass; without it, with numpy (one multiply, one abs,
one float->int cast into reused buffers, and ``np.bincount``). Both give the same counts, bit for bit
(the tests run everything both ways); the kernel is about twice as fast. Chunks stay in cache so main
memory is read once. See benchmarks/histogram_speed.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

from onnxq.collect.grid import DEFAULT_NUM_BINS, MIN_EXPONENT, Histogram, coarsen_counts, exponent_for
from onnxq.errors import CalibrationDataError

try:  # compiled at install time where a C compiler exists (pyproject.toml); same counts, ~2x as fast
    from onnxq.collect import _counting
except ImportError:
    _counting = None

_CHUNK = 1 << 17  # elements per chunk: 512 KiB of float32, stays in L2 with its index buffer
_LANES = 4  # interleaved sub-histograms, see _Workspace
_MIN_LANED = 1 << 15  # tensors smaller than this count in one lane
_MIN_KERNEL = 1 << 15  # smaller tensors count with numpy: clearing and folding 4 lanes would cost more


def as_flat_float(x: np.ndarray) -> np.ndarray:
    """Flat float view/copy of ``x``: float16/32/64 kept, integers and bools widened to float64."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return x.reshape(-1)
    if x.dtype.kind in "iub":
        return x.reshape(-1).astype(np.float64)
    raise CalibrationDataError(
        f"cannot collect statistics of a {x.dtype} tensor; only real numeric tensors are calibrated"
    )


def finite_minmax(x: np.ndarray) -> tuple[float, float]:
    """Exact min and max as Python floats; NaN and Inf propagate through min/max, so one check suffices."""
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        kind = "NaN" if (math.isnan(lo) or math.isnan(hi)) else "infinite"
        raise CalibrationDataError(
            f"the tensor has {kind} values, which cannot be calibrated; "
            "check the calibration inputs and their preprocessing"
        )
    return lo, hi


@functools.cache
def _lane_offsets(num_lanes: int, span: int, itype: type) -> np.ndarray:
    """Read-only ``(k % num_lanes) * span`` for k < _CHUNK: a constant per (lanes, span, dtype).

    Memoised because building it per ``observe`` call (np.tile) cost ~15 % of the counting time.
    """
    lanes = np.tile(np.arange(num_lanes, dtype=itype) * itype(span), -(-_CHUNK // num_lanes))[:_CHUNK]
    lanes.flags.writeable = False
    return lanes


class _Kernel:
    """Counting with the compiled kernel (``_counting.c``): one pass per chunk, lanes as in _Workspace."""

    num_lanes = _LANES

    def __init__(self, num_bins: int, halves: int) -> None:
        self.num_bins, self.signed = num_bins, halves == 2

    def add(self, acc: np.ndarray, x: np.ndarray, exps: list[int]) -> None:
        """acc[lane, half, bin] += the counts of ``x`` on the grids ``exps`` (one exponent per half)."""
        # float16 widens exactly; a strided view (x[::-1]) is copied: the kernel reads contiguous memory
        x = np.ascontiguousarray(x, dtype=np.float32 if x.dtype == np.float16 else x.dtype)
        scales = [math.ldexp(1.0, -e) for e in exps]
        skipped = _counting.count(x, acc, self.num_bins, scales[0], scales[-1], self.signed)
        if skipped:  # finite_minmax and the exponents rule this out; never count silently short
            raise CalibrationDataError(f"{skipped} values missed the histogram grid; please report this bug")


class _Workspace:
    """Scratch buffers for one ``observe`` call, reused across its chunks (never shared between calls).

    Counting is ``np.bincount`` of integer bin indices. Runs of equal indices (the exact zeros of ReLU
    outputs) serialise its increments on one counter, so element k is counted in lane ``k % _LANES``
    (index + lane * span) and the lanes are summed at the end: same counts, ~20 % faster on such data.
    """

    def __init__(self, size: int, dtype: np.dtype, num_bins: int, halves: int) -> None:
        self.f = np.empty(size, np.float64 if dtype == np.float64 else np.float32)
        self.span = halves * num_bins
        self.num_lanes = _LANES if size >= _MIN_LANED else 1  # small tensors: not worth the set-up
        itype = np.int16 if self.num_lanes * self.span <= np.iinfo(np.int16).max else np.int32
        self.i = np.empty(size, itype)
        self.lanes = _lane_offsets(self.num_lanes, self.span, itype)[:size] if self.num_lanes > 1 else None
        self.j = np.empty(size if halves == 2 else 0, itype)
        self.mask = np.empty(size if halves == 2 else 0, bool)

    def add(self, acc: np.ndarray, x: np.ndarray, exps: list[int]) -> None:
        """acc[lane, half, bin] += the counts of ``x`` on the grids ``exps`` (one exponent per half)."""
        if len(exps) == 2:
            self.index_signed(x, exps[0], exps[1])
        else:
            self.index_abs(x, exps[0])
        acc += self.count(x.size).reshape(acc.shape)

    def count(self, m: int) -> np.ndarray:
        """Per-lane bincount of the indices in ``self.i[:m]``: shape (num_lanes * span,)."""
        i = self.i[:m]
        if self.lanes is not None:
            np.add(i, self.lanes[:m], out=i)
        return np.bincount(i, minlength=self.num_lanes * self.span)

    def index_abs(self, x: np.ndarray, exponent: int) -> None:
        """self.i[:m] = floor(|x| * 2**-exponent)."""
        f, i = self.f[: x.size], self.i[: x.size]
        np.multiply(x, f.dtype.type(math.ldexp(1.0, -exponent)), out=f)  # exact: a power of two
        np.abs(f, out=f)
        np.copyto(i, f, casting="unsafe")  # truncation == floor for non-negative values

    def index_signed(self, x: np.ndarray, e_pos: int, e_neg: int) -> None:
        """self.i[:m] = floor(x * 2**-e_pos) for x >= 0, n + floor(-x * 2**-e_neg) for x < 0.

        Branch-free (masked ufuncs are ~50x slower on random signs): the two floors are computed on
        max(x, 0) and -min(x, 0), one of which is 0 for every element, and added; the half offset n is
        added in integers (adding it in floating point could round the fraction up).
        """
        f, i, j = self.f[: x.size], self.i[: x.size], self.j[: x.size]
        np.maximum(x, 0, out=f)
        np.multiply(f, f.dtype.type(math.ldexp(1.0, -e_pos)), out=f)
        np.copyto(i, f, casting="unsafe")
        np.minimum(x, 0, out=f)
        np.multiply(f, f.dtype.type(-math.ldexp(1.0, -e_neg)), out=f)
        np.copyto(j, f, casting="unsafe")
        np.add(i, j, out=i)
        np.less(x, 0, out=self.mask[: x.size])
        np.multiply(self.mask[: x.size], i.dtype.type(self.span // 2), out=j)
        np.add(i, j, out=i)


def _rescale(acc: np.ndarray, exps: list[int], new: list[int]) -> np.ndarray:
    """Fold the lanes of ``acc`` (lanes, halves, n) and move each half to its new exponent."""
    folded = acc.sum(axis=0)
    out = np.zeros_like(acc)
    for h, (old, e) in enumerate(zip(exps, new, strict=True)):
        out[0, h] = coarsen_counts(folded[h], e - old)
    return out


def _chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, x.size, _CHUNK):
        yield x[start : start + _CHUNK]


def scan(x: np.ndarray, num_bins: int, signed: bool) -> tuple[float, float, list[Histogram]]:
    """min, max and histograms ([|x|] or [pos, neg]) of a non-empty flat float array, chunk by chunk.

    |x|: bin = floor(|x| * 2**-e). Signed: x >= 0 goes to bin floor(x * 2**-e_pos) of the first half,
    x < 0 to bin n + floor(-x * 2**-e_neg) of the second (so -0.0 counts as positive). Each chunk's
    exponents can only grow the running ones; when they do, the counts so far are coarsened first.
    """
    halves = 2 if signed else 1
    if _counting is not None and x.size >= _MIN_KERNEL:
        counter: _Kernel | _Workspace = _Kernel(num_bins, halves)
    else:
        counter = _Workspace(min(x.size, _CHUNK), x.dtype, num_bins, halves)
    acc = np.zeros((counter.num_lanes, halves, num_bins), np.int64)
    exps = [MIN_EXPONENT] * halves
    lo, hi, counted = math.inf, -math.inf, False
    for xc in _chunks(x):
        cmin, cmax = finite_minmax(xc)
        lo, hi = min(lo, cmin), max(hi, cmax)
        tops = [max(cmax, 0.0), max(-cmin, 0.0)] if signed else [max(cmax, -cmin)]
        new = [max(e, exponent_for(t, num_bins)) for e, t in zip(exps, tops, strict=True)]
        if new != exps:
            acc = _rescale(acc, exps, new) if counted else acc
            exps = new
        counter.add(acc, xc, exps)
        counted = True
    folded = acc.sum(axis=0)
    return lo, hi, [Histogram._trusted(folded[h].copy(), exps[h]) for h in range(halves)]


def histogram(x: np.ndarray, num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
    """One-shot |x| histogram on the anchored grid (same result as observing x in any batches)."""
    x = as_flat_float(x)
    if x.size == 0:
        return Histogram.empty(num_bins)
    return scan(x, num_bins, signed=False)[2][0]
