"""Percentile calibration: the smallest grid value below which ``percentile`` % of |x| lies.

Which edge: the *right* edge of the bin where the cumulative count first reaches ``percentile`` % of
the total. The percentile value itself lies somewhere inside that bin, so its right edge is the
smallest histogram value guaranteed to keep at least the requested fraction unclipped, and
``percentile=100`` gives the max at histogram resolution instead of clipping the top bin.
(pytorch-quantization returns the left edge, which clips part of the crossing bin; onnxruntime's is
the same edge as ours on its own grid.) The requested fraction is taken exactly, as a decimal
(``Fraction(str(99.99)) == 9999/100``), so that e.g. 99.99 % of 10 000 values is 9 999, not 10 000.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from onnxq.collect.grid import Histogram
from onnxq.errors import ConfigError


def amax_percentile(hist: Histogram, *, percentile: float = 99.99) -> float:
    """Right edge of the bin where the |x| cumulative count reaches ``percentile`` % (0 < p <= 100)."""
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ConfigError(f"percentile must be a number in (0, 100], got {percentile!r}; 99.99 is usual")
    total = hist.total
    if total == 0:
        return 0.0
    needed = math.ceil(Fraction(str(float(percentile))) * total / 100)
    idx = int(np.searchsorted(np.cumsum(hist.counts), needed, side="left"))
    return (idx + 1) * hist.width
