"""Arabic name romanizer, the decoder as its own recipe key (see models/romanizer.py for the model, data and
metrics). ``evaluate`` runs the whole greedy pipeline with this model as the decoder and the float encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models import romanizer

KEY = "romanizer_decoder"
PART = "decoder"


def build(cache: Path | None = None) -> Path:
    return romanizer.build(PART, cache)


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The decoder's feeds for the 200 calibration names. ``data_root`` is unused (the data is in the wheel)."""
    return romanizer.calib_feeds(PART, limit)


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    return romanizer.eval_feeds(PART, limit)


def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """exact, exact_any, cer (%) on the 2,000 evaluation names; agreement and cer_float with the float
    pipeline when ``float_model`` (the float decoder) is given."""
    return romanizer.evaluate_part(PART, model_path, float_model, limit)
