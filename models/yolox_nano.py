"""YOLOX-Nano benchmark recipe: model copy, COCO128 feeds and a COCO-style mAP evaluator in numpy.

Why numpy: the benchmark must run where only onnxruntime, numpy, scipy and Pillow exist (no OpenCV, no
pycocotools), yet its figure must be comparable with pycocotools' ``COCOeval``. The evaluator therefore
re-implements the parts of ``COCOeval`` that matter here (area range "all", no crowd boxes):

* detections are matched per image and class, in descending score order, each to the still unmatched
  ground-truth box with the highest IoU >= t (ties to the first); IoU uses ``w*h`` areas (no ``+1``);
* at most ``max_dets`` (100) detections per image and class are kept;
* per class and IoU threshold t in {0.50, 0.55, ..., 0.95}: precision is made monotone from the right
  and read at 101 recall points ``searchsorted(recall, r, "left")`` (0 where recall never reaches r);
  AP is the mean of the 101 values;
* mAP averages over the classes present in the ground truth (others are excluded, as COCO's -1).

Model side, as the official YOLOX demo/evaluator: BGR pixels 0-255, letterbox (r = min(416/h, 416/w),
bilinear resize without antialiasing like ``cv2.INTER_LINEAR``, image top-left, pad 114), raw head decoded
with grids and strides 8/16/32, score = objectness * best class probability, class-wise NMS at 0.65 and a
confidence threshold of 0.001 (YOLOX's COCO evaluator settings), boxes scaled back by 1/r.

The float model scores mAP 33.88 / AP50 49.72 (BENCHMARKS.md: 33.9 / 49.8). Other choices, measured:
conf 0.01 gives 33.72 / 49.42; NMS 0.45 gives 33.36 / 50.15; PIL's antialiased bilinear resize gives
33.95 / 49.94; the demo's conf 0.1 gives 32.05 / 46.21.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

try:
    from models import common
except ModuleNotFoundError:  # run as a script, with only models/ on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models import common

KEY = "yolox_nano"
INPUT_NAME = "images"
INPUT_SIZE = 416
STRIDES = (8, 16, 32)
PAD_VALUE = 114.0
CONF_THRESHOLD = 0.001
NMS_IOU = 0.65
MAX_DETS = 100
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

def source_model(data_root: str | Path | None = None) -> Path:
    """Where the shared float model lies: ``<data_root>/../models/yolox_nano.onnx``."""
    return common.data_root(data_root).parent / "models" / "yolox_nano.onnx"


def build(cache: Path | None = None) -> Path:
    """Copy the shared float model into the (git-ignored) cache folder and return the copy's path.

    A copy, so later steps never write next to the read-only shared data and never into tracked files.
    """
    src = source_model()
    if not src.is_file():
        raise FileNotFoundError(
            f"{src} not found: set ONNXQ_DATA to the shared data folder (its ../models holds yolox_nano.onnx)"
        )
    dst = common.cache_dir(cache) / f"{KEY}.onnx"
    if not dst.is_file() or common.sha256_file(dst) != common.sha256_file(src):
        common.atomic_write_bytes(dst, src.read_bytes())
    return dst


# -------------------------------------------------------------------------------------- preprocessing
def load_bgr(path: str | Path) -> np.ndarray:
    """Decode an image to HxWx3 uint8 BGR (grey images are expanded to three channels, as cv2.imread)."""
    return np.ascontiguousarray(common.load_rgb(path)[:, :, ::-1])


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and no antialiasing, rounded to uint8 (cv2.INTER_LINEAR)."""
    in_h, in_w = img.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo)

    y0, y1, fy = axis(out_h, in_h)
    x0, x1, fx = axis(out_w, in_w)
    f = img.astype(np.float32)
    fx32 = fx.astype(np.float32)[None, :, None]
    top = f[y0][:, x0] * (1 - fx32) + f[y0][:, x1] * fx32
    bot = f[y1][:, x0] * (1 - fx32) + f[y1][:, x1] * fx32
    fy32 = fy.astype(np.float32)[:, None, None]
    out = top * (1 - fy32) + bot * fy32
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def letterbox(img_bgr: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """YOLOX preproc: resize by r = min(size/h, size/w), place top-left, pad with 114; -> (1x3xSxS f32, r)."""
    h, w = img_bgr.shape[:2]
    r = min(size / h, size / w)
    nh, nw = int(h * r), int(w * r)
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.float32)
    out[:nh, :nw] = resize_bilinear(img_bgr, nh, nw)
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None]), r


def _images(data_root: str | Path | None, split: str, limit: int | None) -> list[Path]:
    folder = common.data_path(data_root, "coco128", "images", split)
    files = sorted(folder.glob("*.jpg"))
    return files if limit is None else files[:limit]


def _feeds(files: list[Path]) -> Iterator[dict[str, np.ndarray]]:
    for f in files:
        yield {INPUT_NAME: letterbox(load_bgr(f))[0]}


def calib_feeds(
    data_root: str | Path | None = None, limit: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: the 128 COCO train2017 images of coco128, letterboxed."""
    return _feeds(_images(data_root, "train2017", limit))


def eval_feeds(
    data_root: str | Path | None = None, limit: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation feeds: the 128 COCO val2017 images of coco128, letterboxed."""
    return _feeds(_images(data_root, "val2017", limit))


# ------------------------------------------------------------------------------------ post-processing
def decode_outputs(raw: np.ndarray, size: int = INPUT_SIZE, strides: tuple[int, ...] = STRIDES) -> np.ndarray:
    """Official ``demo_postprocess``: xy = (xy + grid) * stride, wh = exp(wh) * stride; other columns kept.

    ``raw`` is [N, 85] (or [1, N, 85]) with rows ordered stride by stride, row-major (y, then x).
    """
    raw = np.asarray(raw, dtype=np.float32)
    squeeze = raw.ndim == 3
    out = raw.reshape(-1, raw.shape[-1]).copy()
    grids, expanded = [], []
    for s in strides:
        n = size // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack((xv, yv), -1).reshape(-1, 2))
        expanded.append(np.full((n * n, 1), s))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(expanded).astype(np.float32)
    if grid.shape[0] != out.shape[0]:
        raise ValueError(
            f"head has {out.shape[0]} rows but a {size} input with strides {strides} gives {grid.shape[0]}: "
            "pass the input size the model was exported for"
        )
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out[None] if squeeze else out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes [n,4] x [m,4] -> [n,m], areas w*h (COCO convention, no +1)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: kept indices by descending score; a box goes when IoU > threshold with a kept one."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    decoded: np.ndarray, ratio: float, conf: float = CONF_THRESHOLD, nms_iou: float = NMS_IOU
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOX postprocess: score = obj * best class prob >= conf, class-wise NMS, boxes / ratio (xyxy).

    Returns (boxes [k,4] in original-image pixels, scores [k], class ids [k]) sorted by score.
    """
    d = decoded.reshape(-1, decoded.shape[-1])
    cls = np.argmax(d[:, 5:], axis=1)
    score = d[:, 4] * d[np.arange(d.shape[0]), 5 + cls]
    m = score >= conf
    xy, wh, score, cls = d[m, :2], d[m, 2:4], score[m], cls[m]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    keep_all = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        keep_all.append(idx[nms(boxes[idx], score[idx], nms_iou)])
    keep = np.concatenate(keep_all) if keep_all else np.zeros(0, np.int64)
    keep = keep[np.argsort(-score[keep], kind="stable")]
    return boxes[keep] / ratio, score[keep], cls[keep]


# ------------------------------------------------------------------------------------- ground truth
def parse_yolo_labels(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO label lines ``class cx cy w h`` (normalised) -> (xyxy pixel boxes [m,4], class ids [m])."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    arr = np.asarray([[float(v) for v in r[:5]] for r in rows], dtype=np.float64)
    cx, cy = arr[:, 1] * width, arr[:, 2] * height
    w, h = arr[:, 3] * width, arr[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, arr[:, 0].astype(np.int64)


def load_ground_truth(image: Path) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of one coco128 image (labels/<split>/<stem>.txt; no file means no objects)."""
    label = image.parents[2] / "labels" / image.parent.name / f"{image.stem}.txt"
    if not label.is_file():
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    with Image.open(image) as im:
        w, h = im.size
    return parse_yolo_labels(label.read_text(), w, h)


# ------------------------------------------------------------------------------------- COCO-style AP
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes xyxy [k,4], scores [k], class ids [k]
GroundTruth = tuple[np.ndarray, np.ndarray]  # boxes xyxy [m,4], class ids [m]


def match_detections(
    det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_thresholds: np.ndarray = IOU_THRESHOLDS
) -> np.ndarray:
    """COCOeval matching for one image and class; detections must be sorted by descending score.

    Each detection takes the still unmatched ground-truth box of highest IoU >= t (first one on ties).
    Returns a bool array [len(thresholds), k]: True where the detection is a true positive.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    tp = np.zeros((thresholds.size, len(det_boxes)), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    ious = box_iou(det_boxes, gt_boxes)
    for ti, t in enumerate(thresholds):
        free = np.ones(len(gt_boxes), dtype=bool)
        floor = min(t, 1 - 1e-10)
        for d in range(len(det_boxes)):
            cand = np.where(free & (ious[d] >= floor), ious[d], -1.0)
            g = int(np.argmax(cand))
            if cand[g] >= 0:
                free[g] = False
                tp[ti, d] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> np.ndarray:
    """COCO 101-point interpolated AP per IoU threshold from pooled detections of one class.

    ``tp`` is [T, k] (true-positive flags per threshold); returns [T] APs (0 when nothing is found).
    """
    tp = np.atleast_2d(tp)
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    tps = np.cumsum(tp[:, order], axis=1, dtype=np.float64)
    fps = np.cumsum(~tp[:, order], axis=1, dtype=np.float64)
    aps = np.zeros(tp.shape[0])
    for t in range(tp.shape[0]):
        if tps.shape[1] == 0:
            continue
        rc = tps[t] / n_gt
        pr = tps[t] / (tps[t] + fps[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")
        q = np.where(idx < pr.size, pr[np.minimum(idx, pr.size - 1)], 0.0)
        aps[t] = q.mean()
    return aps


def coco_map(dets: list[Detections], gts: list[GroundTruth], max_dets: int = MAX_DETS) -> dict[str, float]:
    """mAP@[.5:.95] and AP50 over the classes present in ``gts`` (one entry per image in both lists)."""
    classes = np.unique(np.concatenate([g[1] for g in gts])) if gts else np.zeros(0, np.int64)
    per_class = []
    for c in classes:
        scores, flags, n_gt = [], [], 0
        for (db, ds, dc), (gb, gc) in zip(dets, gts):
            gsel = gb[gc == c]
            dsel = np.flatnonzero(dc == c)
            dsel = dsel[np.argsort(-ds[dsel], kind="mergesort")][:max_dets]
            n_gt += len(gsel)
            scores.append(ds[dsel])
            flags.append(match_detections(db[dsel], gsel))
        per_class.append(average_precision(np.concatenate(scores), np.concatenate(flags, axis=1), n_gt))
    if not per_class:
        return {"map": float("nan"), "ap50": float("nan"), "ap75": float("nan")}
    aps = np.mean(per_class, axis=0)
    return {"map": float(aps.mean()), "ap50": float(aps[0]), "ap75": float(aps[5])}


# ---------------------------------------------------------------------------------------- evaluation
def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float(np.array_equal(a, b))


def evaluate(
    model_path: str | Path, data_root: str | Path | None = None, *, float_model: str | Path | None = None
) -> dict[str, float]:
    """COCO-style mAP@[.5:.95] (x100) and AP50 of a YOLOX-Nano model on coco128 val2017.

    With ``float_model``, also the cosine similarity of the raw head output to the float model's,
    averaged over images (a direct measure of quantization error, independent of NMS).
    """
    files = _images(data_root, "val2017", None)
    sess = common.session(model_path)
    ref = common.session(float_model) if float_model is not None else None
    dets, gts, cosines = [], [], []
    for f in files:
        x, r = letterbox(load_bgr(f))
        raw = sess.run(None, {INPUT_NAME: x})[0]
        dets.append(postprocess(decode_outputs(raw[0]), r))
        gts.append(load_ground_truth(f))
        if ref is not None:
            cosines.append(_cosine(raw, ref.run(None, {INPUT_NAME: x})[0]))
    m = coco_map(dets, gts)
    out = {k: 100 * v for k, v in m.items()}
    out["images"] = float(len(files))
    if cosines:
        out["cosine"] = float(np.mean(cosines))
    return out


if __name__ == "__main__":
    import json

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else source_model()
    ref_path = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(json.dumps(evaluate(path, float_model=ref_path), indent=2))
