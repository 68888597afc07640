"""Solved quantization parameters: what calibration hands the rewrite, the analyses and the report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuantParams:
    """Scale and zero point of one spec; arrays are scalars (per tensor) or 1-D along ``axis``.

    ``dtype`` names the integer format (:data:`onnxq.formats.FORMATS`): "int8", "uint8" or "int32".
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None
    dtype: str
    lo: float = 0.0  # calibrated float range, kept for the report
    hi: float = 0.0
