"""Hmean x100 (IoU 0.5) of PP-OCR det probability maps against the ocr-synth boxes, for ``--metric-script``.

Sample i must be the i-th image of ``ocr-synth/det/eval`` in sorted file order, as
``python models/prepare.py ppocr_det --split eval --out DIR`` writes. onnxq calls ``metric(outputs)`` with,
per sample, the list of model outputs (here the [1, 1, H, W] probability map); boxes come from the DB
post-processing of ``models/ppocr_det_eval.py``. ``ONNXQ_METRIC_SPLIT=calib`` scores against the boxes of
``ocr-synth/det/calib`` instead (held out from the evaluation images).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for models/

from models import ppocr_det_eval as det  # noqa: E402


@functools.lru_cache(maxsize=2)
def _ground_truth(split: str) -> list[np.ndarray]:
    return [boxes for _, boxes in det.eval_items(None, split)]


def metric(outputs: list[list[np.ndarray]]) -> float:
    split = os.environ.get("ONNXQ_METRIC_SPLIT", "eval")
    gts = _ground_truth(split)
    if len(outputs) > len(gts):
        raise ValueError(f"{len(outputs)} samples but ocr-synth/det/{split} has {len(gts)} images")
    preds = [det.db_boxes(out[0])[0] for out in outputs]
    return 100.0 * det.hmean(preds, gts[: len(outputs)])["hmean"]
