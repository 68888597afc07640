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
propagate through min and max), one multiply, one abs, one float->int cast into reused buffers, and
``np.bincount``; chunks stay in cache so main memory is read once. See benchmarks/histogram_speed.py.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace

import numpy as np

from onnxq.errors import CalibrationDataError, ConfigError, OutputError

logger = logging.getLogger(__name__)

DEFAULT_NUM_BINS = 2048
MIN_EXPONENT = -127
STATS_FORMAT = "onnxq-stats/1"
_CHUNK = 1 << 17  # elements per chunk: 512 KiB of float32, stays in L2 with its index buffer


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
            raise CalibrationDataError(
                f"invalid histogram ({counts.size} bins, min count {counts.min(initial=0)}); "
                "histograms need at least 2 bins and non-negative counts"
            )
        counts.flags.writeable = False
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "exponent", int(self.exponent))

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
    def edges(self) -> np.ndarray:
        """The ``num_bins + 1`` bin edges (exact in float64)."""
        return np.arange(self.num_bins + 1, dtype=np.float64) * self.width

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
    """Counts after ``shift`` pair-merges: new bin j = sum of old bins j*2**shift ... (j+1)*2**shift - 1."""
    n = counts.size
    if shift <= 0:
        return counts.copy()
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
    return Histogram(_coarsen(a.counts, e - a.exponent) + _coarsen(b.counts, e - b.exponent), e)


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


class _Workspace:
    """Per-call scratch buffers reused across chunks (never shared between calls)."""

    def __init__(self, size: int, dtype: np.dtype, num_bins: int) -> None:
        work = np.float64 if dtype == np.float64 else np.float32
        self.f = np.empty(size, work)
        self.i = np.empty(size, np.int16 if num_bins <= np.iinfo(np.int16).max else np.int32)
        self.num_bins = num_bins

    def count(self, v: np.ndarray, exponent: int, *, absolute: bool, in_place: bool = False) -> np.ndarray:
        """bincount of floor(|v| * 2**-exponent); requires |v| < num_bins * 2**exponent.

        With ``in_place`` the values are already in ``self.f[:v.size]`` and are scaled there.
        """
        f = self.f[: v.size]
        i = self.i[: v.size]
        np.multiply(f if in_place else v, f.dtype.type(math.ldexp(1.0, -exponent)), out=f)
        if absolute:
            np.abs(f, out=f)
        np.copyto(i, f, casting="unsafe")  # truncation == floor for non-negative values
        return np.bincount(i, minlength=self.num_bins)


def _chunks(x: np.ndarray):
    for start in range(0, x.size, _CHUNK):
        yield x[start : start + _CHUNK]


def _scan_abs(x: np.ndarray, num_bins: int) -> tuple[float, float, Histogram]:
    """min, max and |x| histogram of a non-empty flat float array, chunk by chunk."""
    ws = _Workspace(min(x.size, _CHUNK), x.dtype, num_bins)
    counts = np.zeros(num_bins, np.int64)
    exp, lo, hi = MIN_EXPONENT, math.inf, -math.inf
    for xc in _chunks(x):
        cmin, cmax = _finite_minmax(xc)
        lo, hi = min(lo, cmin), max(hi, cmax)
        e = exponent_for(max(-cmin, cmax), num_bins)
        if e > exp:
            counts, exp = _coarsen(counts, e - exp), e
        counts += ws.count(xc, exp, absolute=True)
    return lo, hi, Histogram(counts, exp)


def _scan_signed(x: np.ndarray, num_bins: int) -> tuple[float, float, Histogram, Histogram]:
    """min, max and the (pos, neg) histograms of a non-empty flat float array.

    pos counts max(x, 0) and neg counts max(-x, 0); each then removes the zeros contributed by the
    other sign from its bin 0 (``x < 0`` decides the side, so -0.0 counts as positive).
    """
    ws = _Workspace(min(x.size, _CHUNK), x.dtype, num_bins)
    pos, neg = np.zeros(num_bins, np.int64), np.zeros(num_bins, np.int64)
    epos = eneg = MIN_EXPONENT
    lo, hi = math.inf, -math.inf
    for xc in _chunks(x):
        cmin, cmax = _finite_minmax(xc)
        lo, hi = min(lo, cmin), max(hi, cmax)
        n_neg = int(np.count_nonzero(xc < 0))
        e = exponent_for(max(cmax, 0.0), num_bins)
        if e > epos:
            pos, epos = _coarsen(pos, e - epos), e
        e = exponent_for(max(-cmin, 0.0), num_bins)
        if e > eneg:
            neg, eneg = _coarsen(neg, e - eneg), e
        f = ws.f[: xc.size]
        np.maximum(xc, 0, out=f)
        pos += ws.count(xc, epos, absolute=False, in_place=True)
        pos[0] -= n_neg
        np.negative(xc, out=f)
        np.maximum(f, 0, out=f)
        neg += ws.count(xc, eneg, absolute=False, in_place=True)
        neg[0] -= xc.size - n_neg
    return lo, hi, Histogram(pos, epos), Histogram(neg, eneg)


def histogram(x: np.ndarray, num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
    """One-shot |x| histogram on the anchored grid (same result as observing x in any batches)."""
    x = _prepare(x)
    if x.size == 0:
        return Histogram.empty(num_bins)
    return _scan_abs(x, num_bins)[2]


# ---------------------------------------------------------------------------------------------------
# Per-tensor statistics


def _ranges_array(ranges: np.ndarray | None) -> np.ndarray:
    arr = np.zeros((0, 2)) if ranges is None else np.array(ranges, dtype=np.float64).reshape(-1, 2)
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
        same = (self.num_bins, self.count, self.min, self.max, self.hist, self.pos, self.neg) == (
            other.num_bins, other.count, other.min, other.max, other.hist, other.pos, other.neg,
        )
        return same and np.array_equal(self.batch_ranges, other.batch_ranges)

    __hash__ = None  # type: ignore[assignment]


def new_stats(num_bins: int = DEFAULT_NUM_BINS, *, histogram: bool = True, signed: bool = False) -> TensorStats:
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
        lo, hi, pos, neg = _scan_signed(flat, stats.num_bins)
    elif stats.has_histogram:
        lo, hi, hist = _scan_abs(flat, stats.num_bins)
    else:
        lo, hi = _finite_minmax(flat)
    batch = TensorStats(stats.num_bins, int(flat.size), lo, hi, hist, pos, neg, np.array([[lo, hi]]))
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
        np.concatenate([a.batch_ranges, b.batch_ranges]),
    )


# ---------------------------------------------------------------------------------------------------
# Persistence: a plain .npz, loadable with allow_pickle=False

_MODES = {0: (False, False), 1: (True, False), 2: (True, True)}


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


def save_stats(path: str | os.PathLike, stats: dict[str, TensorStats], meta: dict[str, str] | None = None) -> None:
    """Write ``stats`` (and string metadata) to ``path`` as an .npz, atomically (temp file + rename)."""
    meta = dict(meta or {})
    arrays: dict[str, np.ndarray] = {
        "format": np.array(STATS_FORMAT),
        "names": np.array(list(stats), dtype=str),
        "meta_keys": np.array([str(k) for k in meta], dtype=str),
        "meta_values": np.array([str(v) for v in meta.values()], dtype=str),
    }
    for i, s in enumerate(stats.values()):
        arrays.update(_stats_arrays(i, s))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise OutputError(f"cannot write statistics to {path}: {err.strerror}; choose a writable folder") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    return TensorStats(num_bins, count, float(rng[0]), float(rng[1]), batch_ranges=data[f"{i}/batches"], **kw)


def load_stats(path: str | os.PathLike) -> tuple[dict[str, TensorStats], dict[str, str]]:
    """Read a file written by ``save_stats``: (stats by tensor name, metadata)."""
    path = os.fspath(path)
    fix = "re-create it with `onnxq calibrate ... -o stats.npz`"
    if not os.path.isfile(path):
        raise CalibrationDataError(f"statistics file {path} does not exist; {fix}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            if str(data["format"]) != STATS_FORMAT:
                raise ValueError(f"format {str(data['format'])!r}, expected {STATS_FORMAT!r}")
            names = [str(n) for n in data["names"]]
            meta = {str(k): str(v) for k, v in zip(data["meta_keys"], data["meta_values"], strict=True)}
            stats = {name: _read_tensor(data, i) for i, name in enumerate(names)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
            CalibrationDataError) as err:
        raise CalibrationDataError(f"{path} is not a valid onnxq statistics file ({err}); {fix}") from err
    return stats, meta
