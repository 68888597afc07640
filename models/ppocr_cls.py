"""PP-OCR text-direction classifier (ch_ppocr_mobile_v2.0_cls) benchmark recipe.

Model: ``ch_ppocr_mobile_v2.0_cls_infer.onnx`` (opset 11, weights as Constant nodes) read verbatim out of
the ``rapidocr-onnxruntime==1.4.4`` wheel (Apache-2.0) and checked against its SHA-256. Input ``x``
[B,3,48,192] float32, output [B,2] softmax, index 1 = text rotated by 180 degrees.

Preprocessing (PaddleOCR ``ClsPreProcess`` / ``resize_norm_img``): BGR, resize to height 48 keeping the
aspect ratio (width ``min(192, ceil(48*w/h))``), ``(x/255 - 0.5)/0.5``, NCHW, zero right padding to
width 192 after normalisation. The crops of ``ocr-synth/cls`` are already 48x192, so for them this is
only the normalisation.

Data: ``ocr-synth/cls/calib`` (200 crops) and ``ocr-synth/cls/eval`` (500), labels in
``<split>_labels.json`` (1 = rotated 180 degrees). Metrics: ``accuracy`` and, given a float model,
``agreement`` (same predicted class), both in percent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models import common

KEY = "ppocr_cls"
MEMBER = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
SHA256 = "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
INPUT = "x"
HEIGHT = 48
WIDTH = 192


def build(cache: Path | None = None) -> Path:
    """Extract the float model from the rapidocr wheel into the cache (skipped when present and intact)."""
    return common.extract_rapidocr_model(KEY, MEMBER, SHA256, cache)


# -------------------------------------------------------------------------------------- preprocessing
def resize_pad(rgb: np.ndarray, height: int = HEIGHT, width: int = WIDTH) -> tuple[np.ndarray, int]:
    """Resize to ``height`` keeping the aspect ratio (bilinear), width capped at ``width``.

    Returns the resized HxW'x3 uint8 image and W'; padding happens after normalisation (see
    :func:`preprocess`), as in PaddleOCR.
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    new_w = min(width, int(math.ceil(height * w / h)))
    if (h, w) == (height, new_w):
        return rgb, new_w
    img = Image.fromarray(rgb).resize((new_w, height), Image.Resampling.BILINEAR)
    return np.asarray(img), new_w


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB crop -> [1,3,48,192] float32 model input (BGR, normalised, zero right padding)."""
    resized, new_w = resize_pad(rgb)
    out = np.zeros((1, 3, HEIGHT, WIDTH), dtype=np.float32)
    out[:, :, :, :new_w] = common.bgr_unit_nchw(resized)
    return out


# ------------------------------------------------------------------------------------------------ data
def _samples(data_root: Path | None, split: str, limit: int | None) -> list[tuple[Path, int]]:
    labels = json.loads(common.data_path(data_root, "ocr-synth", "cls", f"{split}_labels.json").read_text())
    folder = common.data_path(data_root, "ocr-synth", "cls", split)
    items = [(folder / name, int(labels[name])) for name in sorted(labels)]
    return items if limit is None else items[:limit]


def _feeds(items: list[tuple[Path, int]]) -> Iterator[dict[str, np.ndarray]]:
    for path, _ in items:
        yield {INPUT: preprocess(common.load_rgb(path))}


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: the 200 crops of ``ocr-synth/cls/calib``, ``{"x": [1,3,48,192]}`` each."""
    return _feeds(_samples(data_root, "calib", limit))


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation feeds: the 500 crops of ``ocr-synth/cls/eval``, in file-name order."""
    return _feeds(_samples(data_root, "eval", limit))


def eval_labels(data_root: Path | None = None, limit: int | None = None) -> np.ndarray:
    """Labels (1 = rotated 180 degrees) in the order of :func:`eval_feeds`."""
    return np.array([label for _, label in _samples(data_root, "eval", limit)], dtype=np.int64)


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """Accuracy (%) against the labels, and agreement (%) with ``float_model``'s predictions when given."""
    labels = eval_labels(data_root, limit)
    scores = common.first_outputs(model_path, eval_feeds(data_root, limit))
    result = {"accuracy": common.top1_accuracy(scores, labels), "samples": float(labels.size)}
    if float_model is not None:
        reference = common.first_outputs(float_model, eval_feeds(data_root, limit))
        result["agreement"] = common.top1_agreement(scores, reference)
    return result
