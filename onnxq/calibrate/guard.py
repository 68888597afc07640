"""The range guard: replace a histogram method's threshold by the MSE optimum when it is far worse.

Histogram methods clip; clipping rare outliers is their point, but clipping a ceiling many values reach,
or most of the values, is a failure of the method on that tensor. ``guarded`` detects those cases from
the histogram alone and falls back to the MSE-optimal threshold when the expected squared error of the
method's threshold is more than a ratio of the optimum's (``ActivationSpec.guard_ratio``). Pure math.
"""

from __future__ import annotations

import numpy as np

from onnxq.calibrate.mse import amax_mse, mse_errors
from onnxq.collect.grid import Histogram


def guarded(h: Histogram, observed: float, amax: float, ratio: float) -> float:
    """``amax`` (a threshold on the non-negative values of ``h``, one side of a tensor), or the MSE-optimal
    threshold when ``amax`` is suspect and its expected squared error is more than ``ratio`` times the
    optimum. Suspect: the side saturates at its maximum (a ReLU6 or Clip ceiling many values reach), or
    ``amax`` clips more than ``CLIP_SHARE`` of the values (that is no longer clipping outliers).

    Why not every threshold: entropy clipped EfficientNet-Lite0's ReLU6 outputs at 3.4 of 6 (44x the
    optimal error; agreement 97.25 -> 99.0 with the guard), but on YOLOX-Nano the MSE optimum of its
    long-tailed SiLU outputs keeps rare outliers and wastes resolution on them (mAP 27.9 -> 4.1 when
    every tensor was guarded). A ceiling is a spike in the top bin, an outlier is a lone count there.
    The clipped share catches entropy's blind spot: for data away from zero (a HardSigmoid output in
    [0.12, 0.35]) every candidate that folds all values into one bin has zero divergence, and TensorRT's
    search returns the smallest one, clipping everything.

    The optimum comes from a coarse-then-fine search (8x cheaper): a near-optimal reference can only make
    the guard fire less often, never replace a threshold that the exact optimum would have kept."""
    if amax <= 0.0 or h.total == 0 or not (saturates(h) or clipped_share(h, amax) > CLIP_SHARE):
        return amax
    best = min(amax_mse(h, coarse=8), observed)
    errors = mse_errors(h.counts, np.array([amax, best]) / h.width - 0.5)
    return best if errors[0] > ratio * errors[1] else amax


CLIP_SHARE = 0.1


def clipped_share(h: Histogram, amax: float) -> float:
    """Share of the values in bins wholly above ``amax``."""
    first = int(np.ceil(amax / h.width))
    return float(h.counts[first:].sum()) / h.total


SATURATION_SHARE = 1e-4  # of all values in the top bin
SATURATION_SPIKE = 8.0  # times the mean count of the bins just below it


def saturates(h: Histogram, below: int = 32) -> bool:
    """True when the top non-empty bin is a spike: at least ``SATURATION_SHARE`` of all values and
    ``SATURATION_SPIKE`` times the mean of the ``below`` bins under it (values piling up at a ceiling)."""
    top = h.top_bin
    if top < 1:
        return False
    counts = h.counts
    peak = float(counts[top])
    under = float(counts[max(0, top - below):top].mean())
    return peak >= SATURATION_SHARE * h.total and peak >= SATURATION_SPIKE * under
