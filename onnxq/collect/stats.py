"""Streaming per-tensor statistics: exact min/max and batch-invariant histograms of |x|.

The grid. A histogram has ``n`` bins of width ``w = 2**e`` anchored at 0: bin ``j`` holds the values with
``j*w <= |x| < (j+1)*w``, i.e. ``j = floor(|x| * 2**-e)``. For data with absolute maximum ``a`` the exponent
is the smallest ``e`` with ``a < n * 2**e`` (strict), clamped below at ``MIN_EXPONENT``.

Why the result does not depend on batching. ``floor(floor(y) / 2) == floor(y / 2)``, so the grid of
exponent ``e + 1`` is obtained from the grid of exponent ``e`` by adding adjacent bin pairs
(``counts.reshape(-1, 2).sum(1)``, zero padded). Every grid refines the coarser ones, and the exponent of a
union of batches is the maximum of their exponents (``max`` commutes with the clamp). Multiplying by a
power of two is exact in binary floating point, so ``|x| * 2**-e`` is computed without rounding and every
value lands in exactly the bin that exact arithmetic gives. Hence the final histogram (counts *and*
exponent) is identical for any batch size, split or order of the same samples. ``observe`` relies on the
same property inside one batch: it processes a large tensor in cache-sized chunks, each with its own
exponent, and merges them; the result equals a one-shot histogram of the whole tensor.

Why ``MIN_EXPONENT = -127``: the bin index is computed in float32 for float16/float32 data, and the
multiplier ``2**-e`` must be a finite float32, so ``-e <= 127``. All-zero data (and data below
``num_bins * 2**-127``) uses that exponent; calibrators then return a tiny or zero amax that
``onnxq.calibrate.params`` turns into its minimum scale. Float16 data is widened to float32 and integer
data to float64 (both exact); float64 data is binned in float64.

Signed statistics for asymmetric targets are kept as two anchored histograms, ``pos`` of ``x`` for
``x >= 0`` and ``neg`` of ``-x`` for ``x < 0``, each with its own exponent; ``merge(pos, neg)`` is exactly
the |x| histogram, so a TensorStats holds either ``hist`` or the pair, never both.

Speed. ``observe`` makes one pass over each chunk for min/max (which also detects NaN/Inf: both
propagate through min and max), then counts it: with the compiled kernel (``_counting.c``, built at
install time where a C compiler exists) in one more pass; without it, with numpy (one multiply, one abs,
one float->int cast into reused buffers, and ``np.bincount``). Both give the same counts, bit for bit
(the tests run everything both ways); the kernel is about twice as fast. Chunks stay in cache so main
memory is read once. See benchmarks/histogram_speed.py.
"""

from __future__ import annotations

import functools
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from onnxq import io
from onnxq.errors import CalibrationDataError, ConfigError

try:  # compiled at install time where a C compiler exists (pyproject.toml); same counts, ~2x as fast
    from onnxq.collect import _counting
except ImportError:
    _counting = None

DEFAULT_NUM_BINS = 2048
MIN_EXPONENT = -127
STATS_FORMAT = "onnxq-stats/1"
_CHUNK = 1 << 17  # elements per chunk: 512 KiB of float32, stays in L2 with its index buffer
_LANES = 4  # interleaved sub-histograms, see _Workspace
_MIN_LANED = 1 << 15  # tensors smaller than this count in one lane
_MIN_KERNEL = 1 << 15  # smaller tensors count with numpy: clearing and folding 4 lanes would cost more


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
        """Wrap a fresh int64 array without copying or validating it (internal fast path)."""
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
        return Histogram(_coarsen(self.counts, exponent - self.exponent), exponent)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.exponent == other.exponent and np.array_equal(self.counts, other.counts)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Histogram(num_bins={self.num_bins}, exponent={self.exponent}, total={self.total})"


def _coarsen(counts: np.ndarray, shift: int) -> np.ndarray:
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
    return Histogram._trusted(_coarsen(a.counts, e - a.exponent) + _coarsen(b.counts, e - b.exponent), e)


# ---------------------------------------------------------------------------------------------------
# Counting kernel


def _prepare(x: np.ndarray) -> np.ndarray:
    """Flat float view/copy of ``x``: float16/32/64 kept, integers and bools widened to float64."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return x.reshape(-1)
    if x.dtype.kind in "iub":
        return x.reshape(-1).astype(np.float64)
    raise CalibrationDataError(
        f"cannot collect statistics of a {x.dtype} tensor; only real numeric tensors are calibrated"
    )


def _finite_minmax(x: np.ndarray) -> tuple[float, float]:
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
        if skipped:  # _finite_minmax and the exponents rule this out; never count silently short
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
        out[0, h] = _coarsen(folded[h], e - old)
    return out


def _chunks(x: np.ndarray):
    for start in range(0, x.size, _CHUNK):
        yield x[start : start + _CHUNK]


def _scan(x: np.ndarray, num_bins: int, signed: bool) -> tuple[float, float, list[Histogram]]:
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
        cmin, cmax = _finite_minmax(xc)
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
    x = _prepare(x)
    if x.size == 0:
        return Histogram.empty(num_bins)
    return _scan(x, num_bins, signed=False)[2][0]


# ---------------------------------------------------------------------------------------------------
# Per-tensor statistics


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
    flat = _prepare(x)
    if flat.size == 0:
        return stats
    hist = pos = neg = None
    if stats.signed:
        lo, hi, (pos, neg) = _scan(flat, stats.num_bins, signed=True)
    elif stats.has_histogram:
        lo, hi, (hist,) = _scan(flat, stats.num_bins, signed=False)
    else:
        lo, hi = _finite_minmax(flat)
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


# ---------------------------------------------------------------------------------------------------
# Persistence: a plain .npz, loadable with allow_pickle=False

_MODES = {0: (False, False), 1: (True, False), 2: (True, True)}  # mode -> (has_histogram, signed)
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, CalibrationDataError)


def _stats_arrays(i: int, s: TensorStats) -> dict[str, np.ndarray]:
    mode = 2 if s.signed else int(s.has_histogram)
    exps = [h.exponent if h is not None else 0 for h in (s.hist, s.pos, s.neg)]
    out = {
        f"{i}/info": np.array([s.num_bins, s.count, mode, *exps], np.int64),
        f"{i}/range": np.array([s.min, s.max], np.float64),
        f"{i}/batches": np.asarray(s.batch_ranges, np.float64),
    }
    for key, h in (("counts", s.hist), ("pos", s.pos), ("neg", s.neg)):
        if h is not None:
            out[f"{i}/{key}"] = h.counts
    return out


def save_stats(
    path: str | os.PathLike, stats: dict[str, TensorStats], meta: dict[str, str] | None = None
) -> None:
    """Write ``stats`` (and string metadata) to ``path`` as an .npz, atomically (``onnxq.io.write_atomic``)."""
    meta = dict(meta or {})
    arrays: dict[str, np.ndarray] = {
        "format": np.array(STATS_FORMAT),
        "names": np.array(list(stats), dtype=str),
        "meta_keys": np.array([str(k) for k in meta], dtype=str),
        "meta_values": np.array([str(v) for v in meta.values()], dtype=str),
    }
    for i, s in enumerate(stats.values()):
        arrays.update(_stats_arrays(i, s))
    io.write_atomic(path, lambda fh: np.savez(fh, **arrays))


def _read_tensor(data, i: int) -> TensorStats:
    info = np.asarray(data[f"{i}/info"])
    rng = np.asarray(data[f"{i}/range"])
    if info.shape != (6,) or info.dtype.kind != "i" or rng.shape != (2,) or int(info[2]) not in _MODES:
        raise ValueError(f"entry {i} has a bad header")
    num_bins, count, mode, e_hist, e_pos, e_neg = (int(v) for v in info)
    has_hist, signed = _MODES[mode]
    kw: dict[str, Histogram] = {}
    if signed:
        kw = {"pos": Histogram(data[f"{i}/pos"], e_pos), "neg": Histogram(data[f"{i}/neg"], e_neg)}
    elif has_hist:
        kw = {"hist": Histogram(data[f"{i}/counts"], e_hist)}
    lo, hi = float(rng[0]), float(rng[1])
    return TensorStats(num_bins, count, lo, hi, batch_ranges=data[f"{i}/batches"], **kw)


def load_stats(path: str | os.PathLike) -> tuple[dict[str, TensorStats], dict[str, str]]:
    """Read a file written by ``save_stats``: (stats by tensor name, metadata)."""
    path = os.fspath(path)
    fix = "re-create it with `onnxq calibrate ... -o stats.npz`"
    if not os.path.isfile(path):
        raise CalibrationDataError(f"statistics file {path} does not exist; {fix}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with data:
            if str(data["format"]) != STATS_FORMAT:
                raise ValueError(f"format {str(data['format'])!r}, expected {STATS_FORMAT!r}")
            names = [str(n) for n in data["names"]]
            meta = {str(k): str(v) for k, v in zip(data["meta_keys"], data["meta_values"], strict=True)}
            stats = {name: _read_tensor(data, i) for i, name in enumerate(names)}
    except _READ_ERRORS as err:
        raise CalibrationDataError(f"{path} is not a valid onnxq statistics file ({err}); {fix}") from err
    return stats, meta
