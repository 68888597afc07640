"""Held-out scoring of a quantized model against its float model: which feeds score, and how.

``--method auto`` collects statistics on part of the calibration feeds, solves with every method and keeps
the candidate whose outputs stay closest to the float model's on the feeds held out from range estimation
(scoring on the feeds that set the ranges would favour minmax, whose ranges cover exactly those feeds).

**The split** (:func:`split_feeds`): with ``n >= 8`` feeds, ``h = min(32, max(2, n // 5))`` feeds are held
out, every ``k``-th with ``k = n // h``: feeds ``k-1, 2k-1, ..., hk-1``. Every k-th rather than the tail:
a source ordered by class, by time or by file name (``cat_*.npz`` before ``dog_*.npz``) would otherwise
hold out one kind of sample, and ranges would be estimated without it. About 20 % are held out (2 of 8
and 2 of 9: at least 2, or one unlucky feed decides), never more than 32 (scoring runs every candidate on
them; 32 samples measure an SQNR to a fraction of a dB). Feed 0 always stays in range estimation.
With fewer than 8 feeds nothing is held out: both sets are all feeds and ``held_out`` is False (the score
is then an in-sample score, which the report must say).

**The score** (:func:`output_scores`): one norm over a whole output hides a destroyed part of it. A YOLOv8
head concatenates box coordinates (0-320) with class scores (0-1) in one output; when the Concat's shared
scale wipes out the scores, the whole-output SQNR reads 26 dB (the boxes carry the energy) while the score
rows are at 2.4 dB. So each output is cut into slices along one axis (:func:`slice_axis`), chosen from its
shape:

* rank >= 4 (``[N, C, H, W]``, ``[N, C, D, H, W]``): axis 1, one slice per channel;
* rank 3: the shorter of axes 1 and 2 (by their largest length over the feeds; equal: the last). A
  detection head's fields (box coordinates, objectness, each class score) are fewer than its anchors in
  both layouts exporters write: YOLOX ``[1, 3549, 85]`` and YOLOv8 ``[1, 84, 8400]`` (the last axis of the
  latter would give 8400 anchor slices, each dominated by its boxes again). A recogniser ``[N, T, 18710]``
  is cut per time step, each slice one step's distribution over the classes: per class, most of 18710
  slices hold probabilities of 1e-11 whose relative errors are huge and meaningless. A transformer's
  ``[N, L, F]`` hidden states are cut per position or per feature, whichever is fewer;
* rank 2 (``[N, F]``): axis 1 (logits, embedding features);
* rank <= 1: the whole tensor is one slice.

A slice axis whose length varies between feeds (time steps of variable-width text) is fine: slice ``j``
gathers index ``j`` of every feed that has one. An output whose rank varies is scored whole (with a note).

SQNR of a slice, over every element of it in every scoring feed (float ``f``, candidate ``q``)::

    P = mean(f^2)     N = mean((f - q)^2)     SQNR = 10 log10(P / N)   dB, clipped to +-100

The signal is taken about zero, as in the whole-output SQNR and ``onnxq compare``: the figures are on one
scale (the whole-output SQNR is the power-weighted combination of the slices'), and a constant slice (a
channel that is always 5.0) is judged against its value rather than against its zero variance. Each slice
is judged against its own power, with no floor relative to the other slices: class scores near 0 at most
anchors are still judged when they sit 50-80 dB below pixel-scale boxes (a floor at -60 dB of the mean
slice power hid a zeroed score column behind 14 dB in the tests). Slices with no signal of their own,
power more than 100 dB below the output's mean slice power (a dead channel, a feature that is 0 for every
sample), are left out of the slice figures (``dead_slices``): judged against their own ~0 power, any error
there would give meaningless very low figures. Their errors still count, in the whole-output SQNR, and an
output's worst figure is the lower of its worst live slice and its whole-output SQNR, so a dead channel
that the candidate fills with noise is judged against the output's signal. Exact matches give the cap,
+100 dB, never inf; a candidate producing inf/nan gives -100 dB. Reference elements that are not finite
are left out (with a note).

Non-float outputs (indices, masks) are compared by exact-match rate ``r`` over all elements, reported as
``-10 log10(1 - r)`` dB (the mismatch fraction read as a noise-to-signal ratio: 99 % matching is 20 dB),
so they take part in the objective. An output whose shape differs between the float and the candidate on
some feed (data-dependent shapes, e.g. after NMS) is not scored (note).

**The objective** (:func:`model_score`): the worst figure over all scored outputs, the higher the better;
:func:`ranking_key` breaks ties (within 0.05 dB) by the mean live-slice SQNR.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SQNR_CAP_DB = 100.0  # exact matches, and the clip of every figure (JSON stays finite)
DEAD_DB = -100.0  # a slice this far below the output's mean slice power carries no signal of its own
MIN_FEEDS_TO_HOLD_OUT = 8
MAX_HELD_OUT = 32
HELD_OUT_FRACTION = 5  # one feed in five
TAIL_FRACTION = 0.05  # OutputScore.tail_db: the slice below which a twentieth of an output's slices lie


# ---------------------------------------------------------------------------------------------- split

@dataclass(frozen=True)
class HeldOutSplit:
    """Feed indices for range estimation and for scoring; ``held_out`` False: both are all feeds."""

    estimation: tuple[int, ...]
    scoring: tuple[int, ...]
    held_out: bool

    def describe(self) -> str:
        """E.g. ``"13 of 64 calibration feeds held out"`` or ``"all 5 calibration feeds (too few to hold
        any out: the score is in-sample)"``."""
        n = len(self.estimation) + (len(self.scoring) if self.held_out else 0)
        if self.held_out:
            return f"{len(self.scoring)} of {n} calibration feeds held out"
        return f"all {n} calibration feeds (fewer than {MIN_FEEDS_TO_HOLD_OUT}: none held out, the score is in-sample)"


def split_feeds(n_feeds: int) -> HeldOutSplit:
    """The deterministic split of ``n_feeds`` calibration feeds (the rule and why: module docstring)."""
    if n_feeds < 0:
        raise ValueError(f"n_feeds must be >= 0, got {n_feeds}")
    every = tuple(range(n_feeds))
    if n_feeds < MIN_FEEDS_TO_HOLD_OUT:
        return HeldOutSplit(every, every, held_out=False)
    held = min(MAX_HELD_OUT, max(2, n_feeds // HELD_OUT_FRACTION))
    k = n_feeds // held
    scoring = tuple(range(k - 1, held * k, k))
    chosen = set(scoring)
    return HeldOutSplit(tuple(i for i in every if i not in chosen), scoring, held_out=True)


# ---------------------------------------------------------------------------------------------- scores

@dataclass(frozen=True)
class OutputScore:
    """One graph output over all scoring feeds.

    ``kind``: "float" (SQNR per slice), "exact" (non-float: exact-match rate, as dB), "skipped" (not
    scored: ``note`` says why; its dB figures are the cap so that they never decide a minimum).
    ``axis`` is the slice axis (None: scored whole); ``worst_slice`` the index along it of the slice that
    gives ``worst_sqnr_db`` (None when the whole-output SQNR is lower than every live slice's).
    """

    output: str
    kind: str
    sqnr_db: float  # the whole output
    worst_sqnr_db: float  # min(worst live slice, whole output)
    mean_slice_sqnr_db: float  # over live slices
    axis: int | None = None
    slices: int = 1
    worst_slice: int | None = None
    dead_slices: int = 0  # no signal of their own: left out of the slice figures
    match_rate: float | None = None  # kind "exact"
    note: str = ""
    tail_sqnr_db: float | None = None  # the TAIL_FRACTION quantile of the live slices (None: == worst_sqnr_db)
    log_probabilities: bool = False  # scored as centred log-probabilities (output_scores' log_probabilities)

    @property
    def tail_db(self) -> float:
        """SQNR of the ``ceil(TAIL_FRACTION * live slices)``-th worst live slice (the worst for 20 slices
        or fewer), not above the whole output's."""
        return self.worst_sqnr_db if self.tail_sqnr_db is None else self.tail_sqnr_db

    @property
    def scored(self) -> bool:
        return self.kind != "skipped"

    @property
    def worst_slice_label(self) -> str:
        """``"axis 2 index 17"``, or "" when the worst figure is the whole output's."""
        if self.axis is None or self.worst_slice is None:
            return ""
        return f"axis {self.axis} index {self.worst_slice}"


def slice_axis(shapes: Sequence[Sequence[int]]) -> int | None:
    """The axis outputs of these shapes (one per feed, all of one rank) are cut into slices along; None:
    the whole tensor (the rule and why: module docstring)."""
    rank = len(shapes[0])
    if rank >= 4:
        return 1
    if rank == 3:
        longest = [max(shape[k] for shape in shapes) for k in (1, 2)]
        return 1 if longest[0] < longest[1] else 2
    return 1 if rank == 2 else None


def sqnr_from_powers(signal: float, noise: float) -> float:
    """10 log10(signal / noise) in dB, +cap for no noise, -cap for non-finite noise, clipped to +-cap."""
    if noise == 0.0:
        return SQNR_CAP_DB
    if not math.isfinite(noise) or signal <= 0.0:
        return -SQNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SQNR_CAP_DB, SQNR_CAP_DB))


def output_scores(
    reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]], names: Sequence[str],
    *, log_probabilities: bool = False,
) -> list[OutputScore]:
    """Score every output of ``candidate`` against ``reference`` (both ``[feed][output]``, outputs in the
    order of ``names``) over all feeds: whole-output and per-slice SQNR (the rules: module docstring).

    ``log_probabilities``: an output whose float values are probability distributions
    (:func:`distribution_axis`) is scored as centred log-probabilities (:func:`centred_log`), the view
    ``auto`` ranks candidates by; the poor line is judged on the values as they are (what the task reads).
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference feeds but {len(candidate)} candidate feeds")
    out = []
    for k, name in enumerate(names):
        refs = [np.asarray(feed[k]) for feed in reference]
        cands = [np.asarray(feed[k]) for feed in candidate]
        out.append(_score_output(name, refs, cands, log_probabilities))
    return out


def _score_output(name: str, refs: list[np.ndarray], cands: list[np.ndarray], log_probabilities: bool = False
                  ) -> OutputScore:
    if not refs:
        return _skipped(name, "no scoring feeds")
    bad = next((i for i, (r, c) in enumerate(zip(refs, cands)) if r.shape != c.shape), None)
    if bad is not None:
        return _skipped(name, f"feed {bad}: shape {refs[bad].shape} in float, {cands[bad].shape} quantized")
    if refs[0].dtype.kind not in "fc":
        return _exact(name, refs, cands)
    note, classes = "", None
    if any(r.ndim != refs[0].ndim for r in refs):
        axis, note = None, "rank varies between feeds: scored whole"
    else:
        axis = slice_axis([r.shape for r in refs])
        classes = distribution_axis(refs) if log_probabilities else None
        if classes is not None:
            refs = [centred_log(r, classes) for r in refs]
            cands = [centred_log(c, classes) for c in cands]
            note = f"probabilities over axis {classes}: scored as centred log-probabilities"
    signal, noise, count, dropped = _slice_sums(refs, cands, axis)
    if not count.sum():
        return _skipped(name, "no finite float values")
    if dropped:
        note = "; ".join(filter(None, [note, f"{dropped} non-finite float values left out"]))
    score = _float_score(name, signal, noise, count, axis, note)
    return dataclasses.replace(score, log_probabilities=True) if log_probabilities and classes is not None else score


PROBABILITY_SUM_TOLERANCE = 1e-3
_LOG_FLOOR = float(np.finfo(np.float32).tiny)  # float32 softmax underflows to 0 below it


def distribution_axis(refs: Sequence[np.ndarray]) -> int | None:
    """The axis along which every float output is a probability distribution (values in [0, 1], each row
    summing to 1 within ``PROBABILITY_SUM_TOLERANCE``, at least 2 classes), the last axis tried first,
    then axis 1; None when neither is.

    Decided from the values, not the graph: a softmax behind reshapes, a Paddle ``[N, T, C]`` or a
    ``[N, C, H, W]`` segmentation map are all found, and an output that merely lies in [0, 1] (sigmoid
    scores) is not one.
    """
    rank = refs[0].ndim
    for axis in dict.fromkeys(a for a in (rank - 1, 1) if 0 <= a < rank):
        if all(r.shape[axis] >= 2 and r.size and _is_distribution(r, axis) for r in refs):
            return axis
    return None


def _is_distribution(x: np.ndarray, axis: int) -> bool:
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0 + PROBABILITY_SUM_TOLERANCE:
        return False
    return bool(np.all(np.abs(x.sum(axis=axis) - 1.0) <= PROBABILITY_SUM_TOLERANCE))


def centred_log(x: np.ndarray, axis: int) -> np.ndarray:
    """``log p`` minus its mean along ``axis``: a softmax output back on the scale of its logits (exactly
    the logits less their mean, up to float32 underflow, floored at the smallest normal float32).

    Why: a probability's error is squeezed to nothing where the model is sure and blown up where two
    classes are close, so its SQNR over a few dozen held-out feeds is decided by one or two borderline
    samples. On PP-OCR cls (2 classes) the probability score over 32 held-out crops swung 10-20 dB with
    8 more feeds and picked a different method each time (97.0 to 98.0 % agreement on 500 crops); on
    centred logits, 200 random draws of 32 crops picked an equalized variant 197 times, as the full set
    does. Softmax ignores a shift common to all classes, and so does the centring.
    """
    logs = np.log(np.maximum(np.asarray(x, dtype=np.float64), _LOG_FLOOR))
    return logs - logs.mean(axis=axis, keepdims=True)


def _slice_sums(refs: list[np.ndarray], cands: list[np.ndarray], axis: int | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per slice: sum f^2, sum (f - q)^2, element count (finite reference elements only), and how many
    reference elements were not finite. Slice j gathers index j of every feed that has one."""
    n = 1 if axis is None else max(r.shape[axis] for r in refs)
    signal, noise, count = np.zeros(n), np.zeros(n), np.zeros(n)
    dropped = 0
    for r, c in zip(refs, cands):
        f = _rows(r, axis)
        q = _rows(c, axis)
        ok = np.isfinite(f)
        dropped += int(ok.size - ok.sum())
        f = np.where(ok, f, 0.0)
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.where(ok, (f - q) ** 2, 0.0)
        err[ok & ~np.isfinite(err)] = np.inf
        m = len(f)
        signal[:m] += (f**2).sum(axis=1)
        noise[:m] += err.sum(axis=1)
        count[:m] += ok.sum(axis=1)
    return signal, noise, count, dropped


def _rows(x: np.ndarray, axis: int | None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(1, -1) if axis is None else np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _float_score(name: str, signal: np.ndarray, noise: np.ndarray, count: np.ndarray, axis: int | None,
                 note: str) -> OutputScore:
    whole = sqnr_from_powers(float(signal.sum()), float(noise.sum()))
    seen = count > 0
    power = signal[seen] / count[seen]
    noise_power = noise[seen] / count[seen]
    if not power.any():  # the float output is 0 everywhere: no scale to judge an error against
        if noise.sum() == 0.0:
            return OutputScore(name, "float", SQNR_CAP_DB, SQNR_CAP_DB, SQNR_CAP_DB, axis, len(signal), note=note)
        return _skipped(name, "the float output is 0 on every scoring feed: no scale to judge the error by")
    live = power >= power.mean() * 10.0 ** (DEAD_DB / 10.0)
    per = np.array([sqnr_from_powers(p, e) for p, e in zip(power[live], noise_power[live])])
    k = int(np.argmin(per))
    worst_slice = None if axis is None or whole < per[k] - 1e-9 else int(np.flatnonzero(seen)[np.flatnonzero(live)[k]])
    tail = float(np.sort(per)[math.ceil(TAIL_FRACTION * len(per)) - 1])
    return OutputScore(
        name, "float", whole, float(min(per[k], whole)), float(per.mean()), axis, len(signal), worst_slice,
        int((~live).sum()), note=note, tail_sqnr_db=float(min(tail, whole)),
    )


def _exact(name: str, refs: list[np.ndarray], cands: list[np.ndarray]) -> OutputScore:
    total = sum(r.size for r in refs)
    if total == 0:
        return _skipped(name, "empty on every scoring feed")
    rate = sum(int(np.sum(r == c)) for r, c in zip(refs, cands)) / total
    db = sqnr_from_powers(1.0, 1.0 - rate)
    return OutputScore(name, "exact", db, db, db, match_rate=rate, note=f"{refs[0].dtype}: exact-match rate")


def _skipped(name: str, why: str) -> OutputScore:
    return OutputScore(name, "skipped", SQNR_CAP_DB, SQNR_CAP_DB, SQNR_CAP_DB, note=f"not scored: {why}")


# ---------------------------------------------------------------------------------------------- objective

def model_score(scores: Sequence[OutputScore]) -> float:
    """The worst slice SQNR (dB) over every scored output: the objective ``auto`` maximises.

    With no scored output every candidate gets -100 dB (they tie; the caller keeps its first).
    """
    scored = [s.worst_sqnr_db for s in scores if s.scored]
    return float(min(scored)) if scored else -SQNR_CAP_DB


def ranking_key(scores: Sequence[OutputScore]) -> tuple[float, float]:
    """Sort key, the larger the better: (worst slice SQNR rounded to 0.1 dB, mean over scored outputs of the
    mean slice SQNR). Worst slices within 0.05 dB tie (held-out noise), and the mean decides."""
    scored = [s.mean_slice_sqnr_db for s in scores if s.scored]
    return round(model_score(scores), 1), float(np.mean(scored)) if scored else -SQNR_CAP_DB
