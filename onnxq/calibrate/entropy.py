"""TensorRT's entropy calibration (IInt8EntropyCalibrator2), vectorised over all candidates.

Algorithm (GTC 2017 S7310 "8-bit Inference with TensorRT"; see notes/peers-and-algorithms.md 2.1), on a
histogram ``H`` of |x| with ``n`` bins of width ``w``:

For every candidate ``i`` in ``[start_bin, n)`` (step ``stride``), the number of leading bins kept:

* reference ``P = H[0:i]`` with the clipped tail folded into the last kept bin,
  ``P[i-1] += sum(H[i:])``;
* candidate ``Q``: the ``i`` source bins ``H[0:i]`` (tail not folded) are split into ``levels`` groups,
  each group's sum is spread uniformly over the group's *non-empty* source bins, and empty source bins
  stay 0. Slides' example: P = [1,0,2,3,5,3,1,7], 2 levels -> sums [6, 16] -> Q = [2,0,2,2,4,4,4,4];
* ``D(i) = KL(P/sum P || Q/sum Q)``; a bin with P > 0 and Q = 0 (only possible in the folded last bin
  when H[i-1] == 0 but the tail is not empty) makes D(i) infinite.

The threshold is ``(m + 0.5) * w`` for the minimising candidate ``m`` (the slides' formula).

Variant choices, where the description leaves room:

* Group split when ``i`` is not a multiple of ``levels``: source bin ``j`` belongs to group
  ``floor(j * levels / i)`` (group sizes differ by at most one, spread evenly). This is NVIDIA's own
  re-implementation in pytorch-quantization / modelopt (``digitize(range(i), linspace(0, i, levels+1))``);
  MXNet/onnxruntime instead put the whole remainder into the last group, which makes that group up
  to twice as wide exactly where the clipping decision is made.
* Ties: the smallest candidate whose divergence is within ``TIE_TOLERANCE`` nats of the minimum. In
  exact arithmetic ties are common (data spanning few bins gives D = 0 for every candidate past its
  maximum) and the closed-form evaluation below differs from a bin-by-bin sum by rounding only, so a
  tolerance keeps the choice stable; the smallest threshold is numpy's argmin rule (TensorRT's
  pseudocode) and keeps a constant tensor's amax at its value rather than anywhere above it.
* Zero spike: by default bin 0 (which holds every exact zero) is replaced by bin 1 before the
  search, as NVIDIA's pytorch-quantization does; ``suppress_zero_bin=False`` gives the plain algorithm.
* Fallbacks (documented, not TensorRT behaviour, which is undefined there): an empty histogram gives
  0.0; when no candidate would clip anything (``n <= start_bin`` or the highest non-empty bin is below
  ``start_bin``), or every candidate diverges, the result is the right edge of the highest non-empty
  bin, i.e. the max at histogram resolution (no clipping).

Vectorisation. With prefix sums ``S`` (counts), ``Z`` (non-empty bins) and ``A`` (sum of h log h) over the
bins, and group boundaries ``b_g = ceil(g * i / levels)``, group sums ``G_g`` and non-empty counts
``N_g`` are differences of prefix sums, and with ``T = sum H``, tail ``O = T - S[i]``:

    sum P log P = (A[i-1] + f(H[i-1] + O)) / T - log T,            f(v) = v log v
    sum P log Q = (sum_g G_g log(G_g / N_g) + O log q_last) / T - log S[i]

where ``q_last = G/N`` of the last bin's group. So ``D(i)`` costs O(levels), and all candidates of a
2048-bin histogram take a few milliseconds.
"""

from __future__ import annotations

import functools

import numpy as np

from onnxq.calibrate.minmax import amax_minmax
from onnxq.calibrate.params import check_int_option
from onnxq.collect.grid import Histogram

TIE_TOLERANCE = 1e-10


def _xlogx(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


def kl_divergences(counts: np.ndarray, candidates: np.ndarray, levels: int = 128) -> np.ndarray:
    """KL(P || Q) of TensorRT's entropy calibration for each candidate bin count ``i`` (module docstring).

    ``counts`` are |x| histogram counts; returns float64 divergences, ``inf`` where Q misses mass of P.
    """
    h = np.asarray(counts, dtype=np.int64)
    i = np.asarray(candidates, dtype=np.int64)
    s = np.concatenate([[0], np.cumsum(h)])
    z = np.concatenate([[0], np.cumsum(h > 0)])
    a = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    total = int(s[-1])
    bounds, g_last = _groups(i.tobytes(), levels)
    g_sum = np.diff(s[bounds], axis=1)  # one gather per prefix sum, then adjacent differences
    g_nz = np.diff(z[bounds], axis=1)
    ratio = np.where(g_sum > 0, g_sum / np.maximum(g_nz, 1), 1.0)
    sum_glog = np.einsum("ij,ij->i", g_sum.astype(np.float64), np.log(ratio))
    tail = total - s[i]
    last = h[i - 1]
    q_last = ratio[np.arange(i.size), g_last]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_log_p = (a[i - 1] + _xlogx(last + tail)) / total - np.log(total)
        p_log_q = (sum_glog + np.where(tail > 0, tail * np.log(q_last), 0.0)) / total - np.log(s[i])
        kl = p_log_p - p_log_q
    return np.where(((last == 0) & (tail > 0)) | (s[i] == 0), np.inf, np.maximum(kl, 0.0))


@functools.lru_cache(maxsize=16)
def _groups(candidates: bytes, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Group boundaries ``ceil(g * i / levels)`` per candidate ``i``, and the group of bin ``i - 1``.

    Data-independent, so computed once per candidate set (every tensor of a model shares it).
    """
    i = np.frombuffer(candidates, dtype=np.int64)
    bounds = (np.arange(levels + 1)[None, :] * i[:, None] + levels - 1) // levels
    g_last = ((i - 1) * levels) // i
    bounds.flags.writeable = False
    g_last.flags.writeable = False
    return bounds, g_last


def amax_entropy(
    hist: Histogram, *, start_bin: int = 128, levels: int = 128, stride: int = 1, suppress_zero_bin: bool = True
) -> float:
    """TensorRT entropy-calibration threshold ``(m + 0.5) * width`` of an |x| histogram (see module doc).

    ``suppress_zero_bin`` replaces bin 0 by bin 1 before the search (NVIDIA pytorch-quantization /
    modelopt do the same): after ReLU or ReLU6 a third to a half of all values are exact zeros, and
    that spike dominates the divergence so that the search clips the useful range to a fraction of
    it (EfficientNet-Lite0: ReLU6 outputs clipped at 0.5 instead of 6, top-1 agreement 0 %).
    """
    check_int_option("start_bin", start_bin, 1)
    check_int_option("levels", levels, 1)
    check_int_option("stride", stride, 1)
    counts = hist.counts
    if suppress_zero_bin and counts.size > 1:
        counts = counts.copy()
        counts[0] = counts[1]
    top = hist.top_bin
    if top < 0:
        return 0.0
    if hist.num_bins <= start_bin or top < start_bin:
        return amax_minmax(hist)
    candidates = np.arange(start_bin, hist.num_bins, stride)
    kl = kl_divergences(counts, candidates, levels)
    best = float(kl.min())
    if not np.isfinite(best):
        return amax_minmax(hist)
    m = int(candidates[np.flatnonzero(kl <= best + TIE_TOLERANCE)[0]])
    return (m + 0.5) * hist.width
