"""COCO mAP@[.5:.95] (x100) of YOLOX-Nano outputs on coco128 val2017: a metric for ``--metric-script``.

onnxq calls ``metric(outputs)`` with, per evaluation sample, the list of the model's outputs (here one raw
head [1, 3549, 85]) and ranks or stops on the returned score (higher is better). This script decodes the
head, runs YOLOX's post-processing and scores the detections with the numpy COCO evaluator of
``models/yolox_nano.py``.

Sample i must be the i-th image of ``coco128/images/val2017`` in sorted file order, letterboxed to 416:
exactly what ``python models/prepare.py yolox_nano --split eval --out DIR`` writes. Data is found through
``ONNXQ_DATA`` (default ``../shared/data`` next to the repository). ``ONNXQ_METRIC_SPLIT=calib`` scores
against the train2017 images instead (the calibration split, disjoint from the evaluation images: search
the fallback there and evaluate on val2017).

    python models/prepare.py yolox_nano --split eval --out /tmp/yolox_eval
    onnxq sensitivity models/.cache/yolox_nano.onnx --calib-data /tmp/yolox_calib \\
        --eval-data /tmp/yolox_eval --metric-script examples/metrics/yolox_map.py
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for models/

from models import yolox_nano as yolox


SPLITS = {"eval": "val2017", "calib": "train2017"}


def _split() -> str:
    split = os.environ.get("ONNXQ_METRIC_SPLIT", "eval")
    if split not in SPLITS:
        raise ValueError(f"ONNXQ_METRIC_SPLIT={split!r}: use one of {', '.join(SPLITS)}")
    return SPLITS[split]


@functools.lru_cache(maxsize=2)
def _ground_truth(split: str) -> tuple[tuple[float, ...], list]:
    """Letterbox ratios and ground-truth boxes of the split's images, in sorted file order."""
    files = yolox._images(None, split, None)
    ratios = []
    for f in files:
        with Image.open(f) as im:
            w, h = im.size
        ratios.append(min(yolox.INPUT_SIZE / h, yolox.INPUT_SIZE / w))
    return tuple(ratios), [yolox.load_ground_truth(f) for f in files]


def metric(outputs: list[list[np.ndarray]]) -> float:
    split = _split()
    ratios, gts = _ground_truth(split)
    if len(outputs) > len(ratios):
        raise ValueError(f"{len(outputs)} samples but coco128 {split} has {len(ratios)} images")
    dets = [yolox.postprocess(yolox.decode_outputs(out[0][0]), r) for out, r in zip(outputs, ratios)]
    return 100.0 * yolox.coco_map(dets, gts[: len(outputs)])["map"]
