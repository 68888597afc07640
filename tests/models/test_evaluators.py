"""Task evaluators of the benchmark models: YOLOX-Nano (COCO-style mAP) and PP-OCRv4 det (DB + Hmean).

The pure parts are checked against hand-computed cases and, for COCO AP, against a small literal
transcription of pycocotools' ``evaluateImg`` / ``accumulate`` written independently below. The real-model
tests (marked slow) reproduce BENCHMARKS.md's float figures and skip when data or model is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models import common  # noqa: E402
from models import ppocr_det_eval as D  # noqa: E402
from models import yolox_nano as Y  # noqa: E402


# ------------------------------------------------------------------------------------------ IoU / NMS
@pytest.mark.parametrize("iou", [Y.box_iou, D.box_iou])
def test_box_iou_hand_cases(iou):
    a = np.array([[0, 0, 2, 2], [0, 0, 10, 10]], float)
    b = np.array([[1, 1, 3, 3], [20, 20, 30, 30], [0, 0, 10, 5]], float)
    expected = np.array([[1 / 7, 0, 4 / 50], [1 / 25, 0, 0.5]])
    np.testing.assert_allclose(iou(a, b), expected)
    assert iou(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou([[5, 5, 5, 5]], [[5, 5, 5, 5]])[0, 0] == 0.0  # empty union: 0, no division by zero


def test_nms_keeps_best_and_drops_overlaps_above_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 5], [50, 50, 60, 60]], float)
    scores = np.array([0.5, 0.9, 0.8, 0.3])
    # IoU(1,0)=0.9 -> dropped by 1; IoU(1,2)=5/9 -> kept at 0.65; box 3 is apart
    assert Y.nms(boxes, scores, 0.65).tolist() == [1, 2, 3]
    assert Y.nms(boxes, scores, 0.5).tolist() == [1, 3]
    # exactly at the threshold is kept (only IoU > threshold suppresses)
    pair = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], float)  # IoU 0.5
    assert Y.nms(pair, np.array([1.0, 0.5]), 0.5).tolist() == [0, 1]


# ----------------------------------------------------------------------------------- COCO-style AP
def _img(boxes, scores=None, classes=None):
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    cls = np.zeros(len(boxes), np.int64) if classes is None else np.asarray(classes, np.int64)
    if scores is None:
        return boxes, cls
    return boxes, np.asarray(scores, float), cls


def test_perfect_detections_score_one():
    gt = [_img([[0, 0, 10, 10], [20, 20, 40, 50]], classes=[0, 3]), _img([[5, 5, 9, 9]], classes=[3])]
    dets = [_img(g[0], np.ones(len(g[0])), g[1]) for g in gt]
    m = Y.coco_map(dets, gt)
    assert m["map"] == pytest.approx(1.0) and m["ap50"] == pytest.approx(1.0)


def test_one_false_positive_at_rank_two():
    # two GT, detections ranked TP, FP, TP: precision [1, 1/2, 2/3] -> envelope [1, 2/3, 2/3];
    # recall 0.5 is reached at rank 1 (51 recall points r <= 0.5 read 1.0),
    # recall 1 at rank 3 (the 50 points above 0.5 read 2/3)
    gt = [_img([[0, 0, 10, 10], [20, 20, 30, 30]])]
    dets = [_img([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 30]], [0.9, 0.8, 0.7])]
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    m = Y.coco_map(dets, gt)
    assert m["map"] == pytest.approx(expected) and m["ap50"] == pytest.approx(expected)


def test_iou_thresholds_and_classes_without_ground_truth():
    gt = [_img([[0, 0, 10, 10]])]
    # IoU 0.62: a true positive at t = 0.50, 0.55, 0.60 only -> mAP 3/10; class 7 has no GT: ignored
    dets = [_img([[0, 0, 10, 6.2], [0, 0, 5, 5]], [0.9, 0.95], [0, 7])]
    m = Y.coco_map(dets, gt)
    assert m["ap50"] == pytest.approx(1.0) and m["ap75"] == 0.0
    assert m["map"] == pytest.approx(0.3)
    # a class in the GT with no detection counts as AP 0
    gt2 = [_img([[0, 0, 10, 10], [30, 30, 40, 40]], classes=[0, 1])]
    assert Y.coco_map([_img([[0, 0, 10, 10]], [0.9], [0])], gt2)["map"] == pytest.approx(0.5)


def test_matching_duplicate_is_false_positive_and_best_iou_wins():
    gts = np.array([[0, 0, 10, 10], [0, 0, 10, 8]], float)
    # det 0 overlaps both GT (IoU 0.9 and 0.889): it takes GT 0 (higher IoU); det 1 then takes GT 1;
    # det 2 duplicates GT 0 which is taken: a false positive
    dets = np.array([[0, 0, 10, 9], [0, 0, 10, 8], [0, 0, 10, 10]], float)
    tp = Y.match_detections(dets, gts, np.array([0.5]))
    assert tp.tolist() == [[True, True, False]]
    assert Y.match_detections(dets, np.zeros((0, 4)), np.array([0.5])).tolist() == [[False] * 3]
    # IoU exactly at the threshold matches (COCO skips only IoU < t)
    assert Y.match_detections(np.array([[0, 0, 10, 5]], float), gts[:1], np.array([0.5, 0.55])).tolist() == [
        [True],
        [False],
    ]


def test_max_dets_keeps_highest_scores_per_image_and_class():
    gt = [_img([[0, 0, 10, 10]])]
    junk = [[100 + i, 100, 110 + i, 110] for i in range(5)]
    dets = [_img(junk + [[0, 0, 10, 10]], [0.9] * 5 + [0.1])]
    assert Y.coco_map(dets, gt, max_dets=5)["map"] == 0.0  # the TP is the 6th: cut
    assert Y.coco_map(dets, gt, max_dets=6)["map"] == pytest.approx(1 / 6)  # precision 1/6 at recall 1


def _reference_ap(dets, gts, cls, t):
    """pycocotools evaluateImg + accumulate for one class and IoU threshold, transcribed loop by loop."""
    scores, matched, npig = [], [], 0
    for (db, ds, dc), (gb, gc) in zip(dets, gts):
        g = [list(b) for b, c in zip(gb, gc) if c == cls]
        d = sorted([(s, list(b)) for b, s, c in zip(db, ds, dc) if c == cls], key=lambda x: -x[0])[:100]
        npig += len(g)
        gtm = [False] * len(g)
        for s, box in d:
            best_iou, m = min(t, 1 - 1e-10), -1
            for gi, gbox in enumerate(g):
                if gtm[gi]:
                    continue
                iw = min(box[2], gbox[2]) - max(box[0], gbox[0])
                ih = min(box[3], gbox[3]) - max(box[1], gbox[1])
                inter = max(iw, 0) * max(ih, 0)
                area_d = (box[2] - box[0]) * (box[3] - box[1])
                area_g = (gbox[2] - gbox[0]) * (gbox[3] - gbox[1])
                union = area_d + area_g - inter
                iou = inter / union
                if iou < best_iou:
                    continue
                best_iou, m = iou, gi
            if m > -1:
                gtm[m] = True
            scores.append(s)
            matched.append(m > -1)
    order = np.argsort(-np.array(scores), kind="mergesort")
    tp = np.cumsum(np.array(matched, bool)[order]).astype(float)
    fp = np.cumsum(~np.array(matched, bool)[order]).astype(float)
    rc, pr = tp / npig, list(tp / (fp + tp + np.spacing(1)))
    for i in range(len(pr) - 1, 0, -1):
        if pr[i] > pr[i - 1]:
            pr[i - 1] = pr[i]
    q = np.zeros(101)
    for ri, pi in enumerate(np.searchsorted(rc, np.linspace(0, 1, 101), side="left")):
        if pi < len(pr):
            q[ri] = pr[pi]
    return q.mean()


def test_coco_map_matches_reference_transcription_on_random_sets():
    rng = np.random.default_rng(0)
    dets, gts = [], []
    for _ in range(12):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (n, 2))
        gb = np.concatenate([xy, xy + rng.uniform(5, 30, (n, 2))], 1)
        gc = rng.integers(0, 3, n)
        jitter = gb + rng.normal(0, 3, gb.shape)
        extra = rng.uniform(0, 100, (3, 2))
        db = np.concatenate([jitter, np.concatenate([extra, extra + 10], 1)])
        dets.append((db, rng.uniform(0, 1, len(db)), np.concatenate([gc, rng.integers(0, 4, 3)])))
        gts.append((gb, gc))
    classes = np.unique(np.concatenate([g[1] for g in gts]))
    ref = np.array([[_reference_ap(dets, gts, c, t) for t in Y.IOU_THRESHOLDS] for c in classes]).mean(0)
    m = Y.coco_map(dets, gts)
    assert 0.05 < m["map"] < 0.95  # a non-trivial case
    assert m["map"] == pytest.approx(ref.mean(), abs=1e-12)
    assert m["ap50"] == pytest.approx(ref[0], abs=1e-12)


# ---------------------------------------------------------------------------- labels and geometry
def test_parse_yolo_labels():
    boxes, cls = Y.parse_yolo_labels("0 0.5 0.5 0.2 0.4\n\n17 0.1 0.9 0.2 0.2\n", 100, 50)
    np.testing.assert_allclose(boxes, [[40, 15, 60, 35], [0, 40, 20, 50]])
    assert cls.tolist() == [0, 17]
    assert Y.parse_yolo_labels("", 100, 50)[0].shape == (0, 4)


def test_ground_truth_without_label_file_is_empty(tmp_path):
    from PIL import Image

    img = tmp_path / "images" / "val2017" / "a.jpg"
    img.parent.mkdir(parents=True)
    Image.new("RGB", (64, 32)).save(img)
    boxes, cls = Y.load_ground_truth(img)
    assert boxes.shape == (0, 4) and cls.size == 0
    (tmp_path / "labels" / "val2017").mkdir(parents=True)
    (tmp_path / "labels" / "val2017" / "a.txt").write_text("3 0.5 0.5 0.5 0.5\n")
    boxes, cls = Y.load_ground_truth(img)
    np.testing.assert_allclose(boxes, [[16, 8, 48, 24]])
    assert cls.tolist() == [3]


def test_resize_bilinear_half_pixel_centres():
    img = np.array([[[0], [100]]], np.uint8)  # 1x2, one channel
    # source x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped 0, 0.25, 0.75, 1
    assert Y.resize_bilinear(img, 1, 4)[0, :, 0].tolist() == [0, 25, 75, 100]
    rnd = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Y.resize_bilinear(rnd, 7, 5), rnd)


def test_letterbox_geometry_pad_and_channel_order():
    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R as loaded
    x, r = Y.letterbox(img)
    assert x.shape == (1, 3, 416, 416) and x.dtype == np.float32
    assert r == pytest.approx(2.08)  # min(416/100, 416/200)
    assert np.all(x[0, :, :208, :] == np.array([10, 20, 30], np.float32)[:, None, None])  # 100*2.08 rows
    assert np.all(x[0, :, 208:, :] == 114.0)
    # a box found on the letterboxed input maps back by 1/r
    decoded = np.zeros((1, 85), np.float32)
    decoded[0, :4] = [208, 104, 104, 52]  # cx, cy, w, h in input pixels
    decoded[0, 4], decoded[0, 5 + 2] = 0.9, 0.5
    boxes, scores, cls = Y.postprocess(decoded, r)
    np.testing.assert_allclose(boxes, [[75, 37.5, 125, 62.5]], rtol=1e-6)
    assert scores == pytest.approx([0.45]) and cls.tolist() == [2]


def test_decode_outputs_grid_and_strides():
    raw = np.zeros((1, 3549, 85), np.float32)
    raw[0, :, 2:4] = np.log(2.0)
    raw[0, 1, :2] = 0.5
    out = Y.decode_outputs(raw)[0]
    assert out.shape == (3549, 85)
    np.testing.assert_allclose(out[0, :4], [0, 0, 16, 16])  # stride 8, grid (0,0), wh = 2*8
    np.testing.assert_allclose(out[1, :4], [12, 4, 16, 16])  # grid x=1: (0.5+1)*8, (0.5+0)*8
    np.testing.assert_allclose(out[52, :4], [0, 8, 16, 16])  # second row of the 52x52 grid
    np.testing.assert_allclose(out[52 * 52, :4], [0, 0, 32, 32], rtol=1e-6)  # first stride-16 cell
    np.testing.assert_allclose(out[-1, :4], [12 * 32, 12 * 32, 64, 64], rtol=1e-6)  # last 13x13 cell
    with pytest.raises(ValueError, match="rows"):
        Y.decode_outputs(np.zeros((10, 85), np.float32))


def test_postprocess_threshold_and_classwise_nms():
    d = np.zeros((4, 85), np.float32)
    d[:, :4] = [[50, 50, 20, 20], [51, 50, 20, 20], [50, 50, 20, 20], [200, 200, 10, 10]]
    d[:, 4] = [0.9, 0.8, 0.7, 0.001]
    d[[0, 1], 5] = 1.0  # class 0: boxes 0 and 1 overlap (IoU 0.9) -> one kept
    d[2, 6] = 1.0  # class 1: same place as box 0, kept (NMS is class-wise)
    d[3, 5] = 0.5  # score 0.0005 < 0.001: dropped
    boxes, scores, cls = Y.postprocess(d, 1.0)
    assert scores.tolist() == pytest.approx([0.9, 0.7]) and cls.tolist() == [0, 1]
    np.testing.assert_allclose(boxes[0], [40, 40, 60, 60])


# ---------------------------------------------------------------------------------------- PP-OCR det
def test_ppocr_preprocess_bgr_and_scale():
    rgb = np.zeros((32, 64, 3), np.uint8)
    rgb[..., 0] = 255  # red
    x = D.preprocess(rgb)
    assert x.shape == (1, 3, 32, 64) and x.dtype == np.float32
    assert x[0, 0].max() == -1.0 and x[0, 2].min() == 1.0  # B channel first
    with pytest.raises(ValueError, match="multiples of 32"):
        D.preprocess(np.zeros((30, 64, 3), np.uint8))


def test_db_boxes_two_rectangles():
    prob = np.zeros((100, 200), np.float32)
    prob[10:20, 20:80] = 0.9  # w = 79-20 = 59, h = 19-10 = 9 (pixel centres)
    prob[50:60, 100:130] = 0.5  # above thresh 0.3 but mean 0.5 < box_thresh 0.6: dropped
    prob[80:83, 140:181] = 0.95  # 3 rows: short side 2 < min_size 3: dropped (would pass after unclip)
    prob[90:100, 0:40] = 0.8  # touches the bottom-left corner: clipped to the image
    boxes, scores = D.db_boxes(prob[None, None], D.DBSettings(unclip_ratio=2.0))
    # d = w*h*ratio/(2(w+h)) = 59*9*2/136 = 7.81 ; (39, 9): d = 39*9*2/96 = 7.31
    np.testing.assert_allclose(boxes, [[12, 2, 87, 27], [0, 83, 46, 100]])
    np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-6)
    boxes15, _ = D.db_boxes(prob, D.DBSettings(unclip_ratio=1.5))  # d = 5.86
    np.testing.assert_allclose(boxes15[0], [14, 4, 85, 25])
    assert len(D.db_boxes(prob, D.DBSettings(box_thresh=0.4))[0]) == 3
    assert D.db_boxes(np.zeros((32, 32)))[0].shape == (0, 4)


def test_hmean_one_to_one_matching():
    gts = [np.array([[0, 0, 100, 20], [0, 50, 100, 70]], float), np.array([[0, 0, 50, 50]], float)]
    preds = [
        np.array([[0, 0, 100, 20], [2, 0, 100, 20], [300, 300, 310, 310]], float),  # one match, a duplicate
        np.array([[0, 0, 50, 25]], float),  # IoU exactly 0.5: not a match (> 0.5 needed)
    ]
    m = D.hmean(preds, gts)
    assert m["precision"] == pytest.approx(1 / 4) and m["recall"] == pytest.approx(1 / 3)
    assert m["hmean"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    # greedy by IoU: each prediction pairs with its best free GT, giving two matches
    g = np.array([[0, 0, 10, 10], [0, 0, 10, 8]], float)
    assert D.count_matches(np.array([[0, 0, 10, 9], [0, 0, 10, 8]], float), g) == 2
    assert D.hmean([np.zeros((0, 4))], [np.zeros((0, 4))])["hmean"] == 0.0


# -------------------------------------------------------------------------------------- real models
def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.mark.slow
def test_yolox_nano_float_map_matches_benchmarks():
    _require(common.data_root() / "coco128" / "images" / "val2017", "coco128 data (set ONNXQ_DATA)")
    model = _require(Y.source_model(), "yolox_nano.onnx")
    m = Y.evaluate(model, float_model=model)
    assert m["map"] == pytest.approx(33.9, abs=0.3)
    assert m["ap50"] == pytest.approx(49.8, abs=0.3)
    assert m["cosine"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_ppocr_det_float_hmean_matches_benchmarks():
    _require(common.data_root() / "ocr-synth" / "det" / "eval_gt.json", "ocr-synth data (set ONNXQ_DATA)")
    model = _require(common.cache_dir() / "ppocr_det.onnx", "ppocr_det.onnx (build it: models/ppocr_det.py)")
    m = D.evaluate(model, float_model=model)
    assert m["hmean"] == pytest.approx(87.2, abs=0.5)
    assert m["box_f1"] == 1.0
    assert m["images"] == 48
    json.dumps(m)  # plain floats, ready for a results table
