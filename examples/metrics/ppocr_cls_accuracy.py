"""Accuracy (%) of the PP-OCR direction classifier against the ocr-synth labels, for ``--metric-script``.

Sample i must be the i-th crop of ``ocr-synth/cls/eval`` in sorted file order, as
``python models/prepare.py ppocr_cls --split eval --out DIR`` writes. onnxq calls ``metric(outputs)`` with,
per sample, the list of model outputs (here [1, 2] scores; index 1 = rotated 180 degrees).
``ONNXQ_METRIC_SPLIT=calib`` scores against the labels of ``ocr-synth/cls/calib`` instead (held out from
the evaluation crops: search the fallback there, evaluate on ``eval``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for models/

from models import ppocr_cls as cls  # noqa: E402


def metric(outputs: list[list[np.ndarray]]) -> float:
    split = os.environ.get("ONNXQ_METRIC_SPLIT", "eval")
    labels = np.array([label for _, label in cls._samples(None, split, len(outputs))], dtype=np.int64)
    if labels.size != len(outputs):
        raise ValueError(f"{len(outputs)} samples but ocr-synth/cls/{split} has {labels.size} crops")
    scores = np.concatenate([o[0] for o in outputs])
    return 100.0 * float(np.mean(scores.argmax(1) == labels))
