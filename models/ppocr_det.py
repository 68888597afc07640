"""PP-OCRv4 text detector (ch_PP-OCRv4_det) benchmark recipe: model and feeds.

Model: ``ch_PP-OCRv4_det_infer.onnx`` (opset 12, weights as Constant nodes) read verbatim out of the
``rapidocr-onnxruntime==1.4.4`` wheel (Apache-2.0) and checked against its SHA-256. Input ``x``
[B,3,H,W] float32 with H and W multiples of 32; output ``sigmoid_0.tmp_0`` [B,1,H,W], the DB text
probability map.

Preprocessing: BGR, ``(x/255 - 0.5)/0.5``, NCHW. The ``ocr-synth/det`` images are 640x640, so no resize.

Data: ``ocr-synth/det/calib`` (24 images) and ``ocr-synth/det/eval`` (48). The evaluator (DB
post-processing, Hmean at IoU 0.5) lives in ``models/ppocr_det_eval.py``; :func:`evaluate` forwards to it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models import common

KEY = "ppocr_det"
MEMBER = "ch_PP-OCRv4_det_infer.onnx"
SHA256 = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
INPUT = "x"
STRIDE = 32


def build(cache: Path | None = None) -> Path:
    """Extract the float model from the rapidocr wheel into the cache (skipped when present and intact)."""
    return common.extract_rapidocr_model(KEY, MEMBER, SHA256, cache)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> [1,3,H,W] float32 model input; H and W must be multiples of 32."""
    h, w = rgb.shape[:2]
    if h % STRIDE or w % STRIDE:
        raise ValueError(f"image is {w}x{h}: PP-OCR det needs sides that are multiples of 32: resize or pad")
    return common.bgr_unit_nchw(rgb)


def _files(data_root: Path | None, split: str, limit: int | None) -> list[Path]:
    folder = common.data_path(data_root, "ocr-synth", "det", split)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files if limit is None else files[:limit]


def _feeds(files: list[Path]) -> Iterator[dict[str, np.ndarray]]:
    for path in files:
        yield {INPUT: preprocess(common.load_rgb(path))}


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: the 24 images of ``ocr-synth/det/calib``, ``{"x": [1,3,640,640]}`` each."""
    return _feeds(_files(data_root, "calib", limit))


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation feeds: the 48 images of ``ocr-synth/det/eval``, in file-name order."""
    return _feeds(_files(data_root, "eval", limit))


def evaluate(
    model_path: Path, data_root: Path | None = None, *, float_model: Path | None = None
) -> dict[str, float]:
    """Hmean at IoU 0.5 (and box F1 against ``float_model``): see ``models/ppocr_det_eval.py``.

    Imported lazily so this recipe (build and feeds) works without the evaluator module.
    """
    try:
        module = importlib.import_module("models.ppocr_det_eval")
    except ModuleNotFoundError:  # run with models/ itself on sys.path
        module = importlib.import_module("ppocr_det_eval")
    return module.evaluate(model_path, data_root, float_model=float_model)
