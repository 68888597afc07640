"""Calibration data sources (onnxq.collect.data, onnxq.collect.images): every error path names the input,
what the model expects and what it got; geometry and normalisation are checked against hand computations."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import DATA
from onnx import TensorProto, helper
from PIL import Image

from onnxq.collect.batching import batched, take
from onnxq.collect.feeds import DataSource, InputSpec, input_specs_from_model
from onnxq.collect.folders import from_dir
from onnxq.collect.images import ImageSpec, from_images, load_image
from onnxq.collect.python_sources import from_iterable, from_script
from onnxq.collect.random_feeds import random_data, resolve_shape
from onnxq.collect.validate import validate_feed, validated
from onnxq.errors import CalibrationDataError, ConfigError, UnsupportedModelError

F32, I64 = np.dtype(np.float32), np.dtype(np.int64)


def make_model(*inputs: tuple[str, int, list | None], weight_as_input: bool = False) -> onnx.ModelProto:
    """One Identity per input; optionally an initializer that is also listed as a graph input (IR 3)."""
    graph_inputs = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    nodes = [helper.make_node("Identity", [n], [n + "_out"]) for n, _, _ in inputs]
    outputs = [helper.make_tensor_value_info(n + "_out", t, s) for n, t, s in inputs]
    inits = []
    if weight_as_input:
        inits = [helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])]
        graph_inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [2]))
        nodes.append(helper.make_node("Identity", ["w"], ["w_out"]))
        outputs.append(helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [2]))
    graph = helper.make_graph(nodes, "g", graph_inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


IMG = InputSpec("images", (1, 3, 4, 6), F32)
DYN = InputSpec("x", ("batch", 3), F32)
BERT = [InputSpec("input_ids", ("batch", "seq"), I64), InputSpec("attention_mask", ("batch", "seq"), I64)]


# ----------------------------------------------------------------------------- specs

def test_input_specs_from_model_maps_dims_dtypes_and_skips_initializers():
    model = make_model(("images", TensorProto.FLOAT, ["batch", 3, 224, None]),
                       ("ids", TensorProto.INT64, [1, "seq"]), ("flag", TensorProto.BOOL, None),
                       weight_as_input=True)
    specs = input_specs_from_model(model)
    assert [s.name for s in specs] == ["images", "ids", "flag"]
    assert specs[0] == InputSpec("images", ("batch", 3, 224, None), F32)
    assert specs[1].shape == (1, "seq") and specs[1].dtype == I64
    assert specs[2].shape is None and specs[2].dtype == np.bool_
    assert specs[0].describe() == "float32 [batch, 3, 224, ?]"


def test_input_specs_rejects_non_tensor_inputs():
    model = make_model(("x", TensorProto.FLOAT, [1]))
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [1])
    model.graph.input.append(seq)
    with pytest.raises(UnsupportedModelError, match="'s'"):
        input_specs_from_model(model)


# ----------------------------------------------------------------------------- validate_feed

def test_validate_rank_error_matches_documented_format():
    spec = InputSpec("images", (1, 3, 416, 416), F32)
    with pytest.raises(CalibrationDataError) as err:
        validate_feed({"images": np.zeros((3, 416, 416), np.float32)}, [spec], 3)
    msg = str(err.value)
    assert msg.startswith("calibration sample 3, input 'images': expected float32 [1, 3, 416, 416], "
                          "got float32 [3, 416, 416]")
    assert "batch dimension" in msg and "\n" not in msg


@pytest.mark.parametrize("feed, fragments", [
    ({}, ["missing input(s) 'x'", "expects 'x' float32 [batch, 3]"]),
    ({"x": np.zeros((1, 3), np.float32), "y": 1}, ["unknown input(s) 'y'"]),
    ({"x": np.zeros((1, 4), np.float32)}, ["input 'x'", "[batch, 3]", "got float32 [1, 4]", "axis 1 is 4, not 3"]),
    ({"x": np.zeros((2, 3, 1), np.float32)}, ["rank 3 instead of 2", "reshape"]),
    ({"x": np.zeros((0, 3), np.float32)}, ["empty"]),
    ({"x": np.ones((1, 3), np.float16) * np.inf}, ["3 of 3 values are NaN or Inf"]),
    ({"x": np.array([[0.0, np.nan, 1.0]])}, ["1 of 3 values are NaN or Inf", "got float64 [1, 3]"]),
    ({"x": np.array([[1e300, 0.0, 1.0]])}, ["exceed the float32 range"]),
    ({"x": np.array([[2**24 + 1, 0, 1]], np.int64)}, ["cannot be represented exactly in float32"]),
    ({"x": np.array([["a", "b", "c"]])}, ["got <U1 [1, 3]"]),
    ({"x": [[1.0, 2.0], [3.0]]}, ["numpy cannot turn into an array"]),
])
def test_validate_errors_name_input_expected_and_got(feed, fragments):
    with pytest.raises(CalibrationDataError) as err:
        validate_feed(feed, [DYN], 0)
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_validate_rejects_non_dict_feed_and_float_for_int():
    with pytest.raises(CalibrationDataError, match="is a ndarray, not a dict"):
        validate_feed(np.zeros((1, 3)), [DYN], 5)
    with pytest.raises(CalibrationDataError, match=r"input 'input_ids': expected int64 \[batch, seq\], "
                                                   r"got float32 \[1, 4\]; float values cannot feed"):
        validate_feed({"input_ids": np.zeros((1, 4), np.float32),
                       "attention_mask": np.ones((1, 4), np.int64)}, BERT, 2)
    with pytest.raises(CalibrationDataError, match="int64 cannot feed a bool input"):
        validate_feed({"m": np.ones((1,), np.int64)}, [InputSpec("m", (1,), np.bool_)], 0)


def test_validate_shared_dim_names_must_agree():
    feed = {"input_ids": np.zeros((1, 8), np.int64), "attention_mask": np.ones((1, 6), np.int64)}
    with pytest.raises(CalibrationDataError, match="dimension 'seq' is 6 here but 8 in input 'input_ids'"):
        validate_feed(feed, BERT, 0)


def test_validate_static_batch_and_check_batch_flag():
    x = np.zeros((2, 3, 4, 6), np.float32)
    with pytest.raises(CalibrationDataError, match="batch dimension is fixed at 1"):
        validate_feed({"images": x}, [IMG], 0)
    assert validate_feed({"images": x}, [IMG], 0, check_batch=False)["images"].shape == (2, 3, 4, 6)


def test_validate_converts_value_preserving_and_logs_once(caplog):
    converted: set = set()
    with caplog.at_level(logging.INFO, logger="onnxq.collect.validate"):
        for i in range(3):
            out = validate_feed({"x": np.full((1, 3), 0.1, np.float64)}, [DYN], i, converted=converted)
            assert out["x"].dtype == np.float32 and out["x"][0, 0] == np.float32(0.1)
    assert sum("converting float64 data to float32" in r.message for r in caplog.records) == 1
    # int pixels to a float input: exact, values unchanged
    out = validate_feed({"x": np.array([[0, 128, 255]], np.uint8)}, [DYN], 0)
    np.testing.assert_array_equal(out["x"], np.array([[0, 128, 255]], np.float32))
    # int32 token ids to int64, and int64 that fits into int32
    ids = validate_feed({"input_ids": np.arange(4, dtype=np.int32)[None],
                         "attention_mask": np.ones((1, 4), np.int64)}, BERT, 0)["input_ids"]
    assert ids.dtype == np.int64 and ids.tolist() == [[0, 1, 2, 3]]
    spec32 = InputSpec("t", (1,), np.int32)
    assert validate_feed({"t": np.array([7], np.int64)}, [spec32], 0)["t"].dtype == np.int32
    with pytest.raises(CalibrationDataError, match="cannot be represented exactly in int32"):
        validate_feed({"t": np.array([2**40], np.int64)}, [spec32], 0)


def test_validate_returns_feed_in_spec_order_and_unchanged_when_matching():
    ids, mask = np.zeros((2, 5), np.int64), np.ones((2, 5), np.int64)
    out = validate_feed({"attention_mask": mask, "input_ids": ids}, BERT, 0)
    assert list(out) == ["input_ids", "attention_mask"] and out["input_ids"] is ids


# ----------------------------------------------------------------------------- from_dir

def test_from_dir_npy_with_and_without_batch_axis_sorted(tmp_path):
    a = np.arange(72, dtype=np.float32).reshape(3, 4, 6)
    np.save(tmp_path / "b.npy", a[None] + 1)          # with the batch axis
    np.save(tmp_path / "a.npy", a)                     # without: gets one
    (tmp_path / "notes.txt").write_text("ignored")
    source = from_dir(tmp_path, [IMG])
    assert source.count == 2 and source.description == f"2 .npy files in {tmp_path}"
    feeds = list(source)
    assert [f["images"].shape for f in feeds] == [(1, 3, 4, 6)] * 2
    np.testing.assert_array_equal(feeds[0]["images"][0], a)
    np.testing.assert_array_equal(feeds[1]["images"][0], a + 1)
    np.testing.assert_array_equal(list(source)[1]["images"], feeds[1]["images"])  # re-iterable


def test_from_dir_npz_multi_input(tmp_path):
    for i in range(3):
        np.savez(tmp_path / f"s{i}.npz", input_ids=np.full(7, i, np.int64),
                 attention_mask=np.ones((1, 7), np.int32))
    feeds = list(from_dir(tmp_path, BERT))
    assert len(feeds) == 3 and feeds[2]["input_ids"].tolist() == [[2] * 7]
    assert feeds[0]["attention_mask"].dtype == np.int64  # converted, values kept


def test_from_dir_errors(tmp_path):
    with pytest.raises(CalibrationDataError, match="does not exist"):
        from_dir(tmp_path / "nope", [IMG])
    with pytest.raises(CalibrationDataError, match=f"no .npy or .npz files in '{tmp_path}'.*images"):
        from_dir(tmp_path, [IMG])
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(CalibrationDataError, match="is a file, not a folder"):
        from_dir(tmp_path / "a.npy", [IMG])
    with pytest.raises(CalibrationDataError, match="this model has 2 inputs.*np.savez"):
        from_dir(tmp_path, BERT)
    np.savez(tmp_path / "b.npz", x=np.zeros(3))
    with pytest.raises(CalibrationDataError, match="mixes .npy and .npz"):
        from_dir(tmp_path, [IMG])


def test_from_dir_bad_files_name_the_file(tmp_path):
    (tmp_path / "0.npy").write_bytes(b"not numpy at all")
    with pytest.raises(CalibrationDataError, match=r"cannot read '.*0\.npy'"):
        list(from_dir(tmp_path, [DYN]))
    (tmp_path / "0.npy").unlink()
    np.save(tmp_path / "1.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationDataError, match=r"1\.npy' holds Python objects"):
        list(from_dir(tmp_path, [DYN]))
    (tmp_path / "1.npy").unlink()
    np.save(tmp_path / "2.npy", np.zeros((1, 5), np.float32))
    with pytest.raises(CalibrationDataError, match=r"calibration sample 0 \(2\.npy\), input 'x'"):
        list(from_dir(tmp_path, [DYN]))


def test_from_dir_unnamed_npz_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", np.zeros((1, 3), np.float32))
    with pytest.raises(CalibrationDataError, match=r"unnamed arrays \(arr_0\).*np.savez\(path, x=...\)"):
        list(from_dir(tmp_path, [DYN]))


# ----------------------------------------------------------------------------- random data

def test_random_data_shapes_dtypes_ranges_and_determinism():
    specs = BERT + [InputSpec("img", ("batch", 3, "h", "w"), F32), InputSpec("m", (1, 2), np.bool_)]
    source = random_data(specs, 4, seed=3, dims={"seq": 5, "h": 8, "w": 2, "batch": 2})
    feeds = list(source)
    assert source.count == 4 and len(feeds) == 4
    assert feeds[0]["input_ids"].shape == (2, 5) and feeds[0]["input_ids"].dtype == np.int64
    assert feeds[0]["img"].shape == (2, 3, 8, 2) and feeds[0]["img"].dtype == np.float32
    assert feeds[0]["m"].dtype == np.bool_
    ids = np.concatenate([f["input_ids"] for f in feeds])
    assert ids.min() >= 0 and ids.max() < 100 and len(np.unique(ids)) > 5
    imgs = np.concatenate([f["img"] for f in feeds])
    assert imgs.min() >= 0 and imgs.max() < 1
    again = list(random_data(specs, 4, seed=3, dims={"seq": 5, "h": 8, "w": 2, "batch": 2}))
    for a, b in zip(feeds, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(list(source)[3]["img"], feeds[3]["img"])  # re-iteration restarts
    other = next(iter(random_data(specs, 1, seed=4, dims={"seq": 5, "h": 8, "w": 2})))
    assert other["img"].shape == (1, 3, 8, 2) and not np.array_equal(other["img"], feeds[0]["img"][:1])
    for feed in feeds:
        validate_feed(feed, specs, 0)


def test_random_data_per_input_ranges_and_normal():
    feed = next(iter(random_data(BERT, 1, dims={"seq": 256}, high={"attention_mask": 2})))
    assert set(np.unique(feed["attention_mask"])) == {0, 1} and feed["input_ids"].max() > 2
    normal = next(iter(random_data([InputSpec("x", (1000,), F32)], 1, distribution="normal", low=-1)))
    assert normal["x"].min() == -1 and normal["x"].max() > 1
    uniform = next(iter(random_data([InputSpec("x", (1000,), F32)], 1, low=-5, high=-4)))["x"]
    assert -5 <= uniform.min() and uniform.max() < -4


def test_random_data_errors():
    with pytest.raises(CalibrationDataError, match=r"input 'input_ids' \[batch, seq\] has a dynamic "
                                                   r"dimension 'seq' \(axis 1\).*--dim seq=VALUE"):
        random_data(BERT, 1)
    unnamed = InputSpec("t", (1, None), F32)
    with pytest.raises(CalibrationDataError, match="--dim t:1=VALUE"):
        random_data([unnamed], 1)
    assert resolve_shape(unnamed, {"t:1": 4}) == (1, 4)
    with pytest.raises(ConfigError, match="no dynamic dimension 'sequence'.*batch, seq"):
        random_data(BERT, 1, dims={"sequence": 4})
    with pytest.raises(ConfigError, match="positive integer"):
        random_data(BERT, 1, dims={"seq": 0})
    with pytest.raises(ConfigError, match="unknown input"):
        random_data(BERT, 1, dims={"seq": 2}, high={"mask": 2})
    with pytest.raises(ConfigError, match="does not fit int8"):
        list(random_data([InputSpec("q", (2,), np.int8)], 1, high=1000))
    with pytest.raises(ConfigError, match="uniform, normal"):
        random_data([DYN], 1, distribution="gauss")
    with pytest.raises(CalibrationDataError, match="declares no shape"):
        random_data([InputSpec("z", None, F32)], 1)


# ----------------------------------------------------------------------------- scripts and iterables

SCRIPT = """
import numpy as np
from helper_mod import SIZE   # a neighbour module: the script's folder is importable

def load_data():
    for i in range(SIZE):
        yield {"x": np.full((1, 3), i, np.float32)}
"""


def test_from_script_loads_and_reiterates(tmp_path):
    (tmp_path / "helper_mod.py").write_text("SIZE = 3\n")
    (tmp_path / "calib_data.py").write_text(SCRIPT)
    source = from_script(tmp_path / "calib_data.py")
    assert source.description == "load_data() from calib_data.py"
    values = [f["x"][0, 0] for f in source]
    assert values == [0, 1, 2] and [f["x"][0, 0] for f in source] == [0, 1, 2]
    assert [f["x"].dtype for f in validated(source, [DYN])] == [F32] * 3


def test_from_script_errors(tmp_path):
    with pytest.raises(CalibrationDataError, match="does not exist"):
        from_script(tmp_path / "missing.py")
    (tmp_path / "nofunc.py").write_text("x = 1\n")
    with pytest.raises(CalibrationDataError, match="'nofunc.py' defines no load_data"):
        from_script(tmp_path / "nofunc.py")
    (tmp_path / "syntax.py").write_text("def load_data(:\n")
    with pytest.raises(CalibrationDataError, match="'syntax.py' line 1 failed while loading: SyntaxError"):
        from_script(tmp_path / "syntax.py")
    (tmp_path / "boom.py").write_text("def load_data():\n    yield {}\n    raise KeyError('no such file')\n")
    source = from_script(tmp_path / "boom.py")
    with pytest.raises(CalibrationDataError) as err:
        list(source)
    assert "'boom.py' line 3 failed while iterating load_data(): KeyError: 'no such file'" in str(err.value)
    (tmp_path / "early.py").write_text("def load_data():\n    return 1 / 0\n")
    with pytest.raises(CalibrationDataError, match="line 2 failed while calling load_data.*ZeroDivisionError"):
        list(from_script(tmp_path / "early.py"))


def test_from_iterable_kinds():
    feeds = [{"x": np.zeros((1, 3), np.float32)}, {"x": np.ones((1, 3), np.float32)}]
    listed = from_iterable(feeds)
    assert listed.count == 2 and len(list(listed)) == 2 and len(list(listed)) == 2
    called = from_iterable(lambda: iter(feeds))
    assert called.count is None and len(list(called)) == 2 and len(list(called)) == 2
    once = from_iterable(iter(feeds))
    assert len(list(once)) == 2
    with pytest.raises(CalibrationDataError, match="can be read only once"):
        list(once)
    assert from_iterable(listed) is listed
    with pytest.raises(CalibrationDataError, match="got a dict.*wrap a single feed in a list"):
        from_iterable(feeds[0])
    with pytest.raises(CalibrationDataError, match="empty"):
        from_iterable([])
    with pytest.raises(CalibrationDataError, match="got a int"):
        list(from_iterable(lambda: 3))


def test_validated_names_sample_and_rejects_empty_source():
    bad = from_iterable([{"x": np.zeros((1, 3), np.float32)}, {"x": np.zeros((1, 2), np.float32)}])
    with pytest.raises(CalibrationDataError, match="calibration sample 1, input 'x'"):
        list(validated(bad, [DYN]))
    with pytest.raises(CalibrationDataError, match="produced no samples"):
        list(validated(from_iterable(lambda: iter(())), [DYN]))


# ----------------------------------------------------------------------------- batched / take

def test_batched_concatenates_and_keeps_remainder():
    feeds = [{"x": np.full((1, 3), i, np.float32)} for i in range(5)]
    source = batched(from_iterable(feeds), 2, [DYN])
    out = list(source)
    assert source.count == 3 and [f["x"].shape[0] for f in out] == [2, 2, 1]
    assert out[1]["x"][:, 0].tolist() == [2, 3]


def test_batched_fixed_batch_rules(caplog):
    with pytest.raises(CalibrationDataError, match="fixed batch dimension of 1.*batch size 1"):
        batched(from_iterable([{}]), 4, [IMG])
    fixed = InputSpec("x", (2, 3), F32)
    feeds = [{"x": np.full((1, 3), i, np.float32)} for i in range(3)]
    source = batched(from_iterable(feeds), 2, [fixed])
    with caplog.at_level(logging.WARNING):
        out = list(source)
    assert source.count == 1 and len(out) == 1 and "dropped the last 1 sample" in caplog.text
    validate_feed(out[0], [fixed], 0)


def test_batched_rejects_mismatched_samples():
    feeds = [{"x": np.zeros((1, 4), np.int64)}, {"x": np.zeros((1, 5), np.int64)}]
    with pytest.raises(CalibrationDataError, match=r"samples 0 and 1: input 'x' is int64 \[1, 4\] in one "
                                                   r"and int64 \[1, 5\]"):
        list(batched(from_iterable(feeds), 2))
    with pytest.raises(CalibrationDataError, match="different inputs"):
        list(batched(from_iterable([{"x": np.zeros(1)}, {"y": np.zeros(1)}]), 2))


def test_take_limits_count():
    source = take(random_data([DYN], 10), 3)
    assert source.count == 3 and len(list(source)) == 3 and "first 3" in source.description
    assert isinstance(source, DataSource)


# ----------------------------------------------------------------------------- images

def save_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_image_normalisation_rgb_nchw_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", pixels)
    spec = ImageSpec(resize="stretch", scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    feed = next(iter(from_images(tmp_path, [IMG], spec)))
    x = pixels.astype(np.float64)
    expected = ((x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)[None]
    assert feed["images"].dtype == np.float32 and feed["images"].shape == (1, 3, 4, 6)
    np.testing.assert_allclose(feed["images"], expected, rtol=1e-5, atol=1e-6)


def test_image_bgr_nhwc_grayscale_and_rgba(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    save_png(tmp_path / "a.png", pixels)
    save_png(tmp_path / "b.png", pixels[..., 0].copy())                                # L
    save_png(tmp_path / "c.png", np.dstack([pixels, np.full((4, 6), 7, np.uint8)]))   # RGBA
    nhwc = InputSpec("images", (1, 4, 6, 3), F32)
    spec = ImageSpec(resize="stretch", channel_order="bgr", layout="NHWC", scale=1.0, mean=(10, 20, 30), std=2)
    feeds = [f["images"] for f in from_images(tmp_path, [nhwc], spec)]
    bgr = pixels[..., ::-1].astype(np.float64)
    np.testing.assert_allclose(feeds[0][0], (bgr - [10, 20, 30]) / 2, rtol=1e-6)
    gray = np.repeat(pixels[..., :1], 3, axis=2).astype(np.float64)
    np.testing.assert_allclose(feeds[1][0], (gray - [10, 20, 30]) / 2, rtol=1e-6)
    np.testing.assert_allclose(feeds[2][0], feeds[0][0])  # alpha dropped


@pytest.mark.parametrize("position, rows", [("center", slice(2, 6)), ("top-left", slice(0, 4))])
@pytest.mark.parametrize("source_hw", [(4, 8), (2, 4)])  # r = 1 (no resize) and r = 2 (upscale)
def test_letterbox_geometry(tmp_path, position, rows, source_hw):
    save_png(tmp_path / "a.png", np.full((*source_hw, 3), (10, 20, 30), np.uint8))
    spec = ImageSpec(size=(8, 8), resize="letterbox", pad_position=position, pad_value=114, scale=1.0)
    out = load_image(tmp_path / "a.png", spec)[0]
    expected = np.full((3, 8, 8), 114.0, np.float32)
    expected[:, rows, :] = np.array([10, 20, 30], np.float32)[:, None, None]
    np.testing.assert_array_equal(out, expected)


def test_letterbox_odd_padding_and_per_channel_pad(tmp_path):
    save_png(tmp_path / "a.png", np.full((3, 8, 3), 50, np.uint8))
    spec = ImageSpec(size=(8, 8), resize="letterbox", pad_value=(1, 2, 3), scale=1.0, layout="NHWC")
    out = load_image(tmp_path / "a.png", spec)[0]
    assert (out[2:5] == 50).all() and (out[:2] == [1, 2, 3]).all() and (out[5:] == [1, 2, 3]).all()


def test_short_side_crop_geometry(tmp_path):
    columns = np.arange(9, dtype=np.uint8) * 10                  # 4 x 9 image, column j has value 10 j
    save_png(tmp_path / "a.png", np.broadcast_to(columns[None, :, None], (4, 9, 3)).copy())
    spec = ImageSpec(size=(4, 4), resize="short-side", short_side=4, scale=1.0, layout="NHWC")
    out = load_image(tmp_path / "a.png", spec)[0]
    # torchvision CenterCrop: left = int(round((9 - 4) / 2)) = round(2.5) = 2 (half to even)
    np.testing.assert_array_equal(out[0, :, 0], [20, 30, 40, 50])
    # without short_side: scaled just to cover 4x4 (no resize here), same crop
    cover = load_image(tmp_path / "a.png", ImageSpec(size=(4, 4), scale=1.0, layout="NHWC"))[0]
    np.testing.assert_array_equal(cover, out)


def test_short_side_resize_then_crop(tmp_path):
    blocks = np.arange(8, dtype=np.uint8).reshape(2, 4) * 30 + 5       # 2 x 4 blocks of 4 x 4 pixels
    image = np.kron(blocks, np.ones((4, 4), np.uint8))                   # 8 x 16
    save_png(tmp_path / "a.png", np.dstack([image] * 3))
    spec = ImageSpec(size=(4, 4), short_side=4, interpolation="nearest", scale=1.0, layout="NHWC")
    out = load_image(tmp_path / "a.png", spec)[0, ..., 0]
    # Resize(4): 8x16 -> 4x8 (each block 2x2), centre crop columns 2..5
    expected = np.kron(blocks, np.ones((2, 2)))[:, 2:6]
    np.testing.assert_array_equal(out, expected)


def test_image_size_and_layout_resolution(tmp_path):
    save_png(tmp_path / "a.png", np.zeros((5, 5, 3), np.uint8))
    dynamic = InputSpec("x", ("batch", 3, "h", "w"), F32)
    with pytest.raises(CalibrationDataError, match="dynamic height or width.*--image-size HxW"):
        from_images(tmp_path, [dynamic])
    feed = next(iter(from_images(tmp_path, [dynamic], ImageSpec(size=(2, 3)))))
    assert feed["x"].shape == (1, 3, 2, 3)
    with pytest.raises(CalibrationDataError, match=r"image size 2x3 does not fit input 'images'"):
        from_images(tmp_path, [IMG], ImageSpec(size=(2, 3)))
    nhwc = InputSpec("images", (1, 4, 6, 3), F32)
    with pytest.raises(CalibrationDataError, match="looks NHWC: add --nhwc"):
        from_images(tmp_path, [nhwc])
    with pytest.raises(CalibrationDataError, match="this model has 2 inputs"):
        from_images(tmp_path, BERT)
    with pytest.raises(CalibrationDataError, match="not a 4-D image batch"):
        from_images(tmp_path, [DYN])
    u8 = InputSpec("u", (1, 4, 6, 3), np.uint8)
    with pytest.raises(CalibrationDataError, match="scale=1, mean=0, std=1"):
        from_images(tmp_path, [u8], ImageSpec(layout="NHWC"))
    raw = next(iter(from_images(tmp_path, [u8], ImageSpec(layout="NHWC", scale=1))))["u"]
    assert raw.dtype == np.uint8 and raw.shape == (1, 4, 6, 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(CalibrationDataError, match="no images .*in '"):
        from_images(tmp_path, [IMG])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    source = from_images(tmp_path, [IMG])
    with pytest.raises(CalibrationDataError, match=r"cannot read image '.*broken\.jpg'"):
        list(source)
    with pytest.raises(ConfigError, match="'squash' is not one of: stretch, short-side, letterbox"):
        ImageSpec(resize="squash")
    with pytest.raises(ConfigError, match="std"):
        ImageSpec(std=(1, 0, 1))
    with pytest.raises(ConfigError, match="short side >= 224"):
        ImageSpec(size=(224, 224), short_side=200)


def test_image_description_and_count(tmp_path):
    for name in ("b.jpg", "a.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    source = from_images(tmp_path, [IMG], ImageSpec(short_side=8, interpolation="bicubic"))
    assert source.count == 2
    assert "2 images in" in source.description and "short side 8 bicubic + centre crop 4x6" in source.description


def test_real_imagenet_images_with_efficientnet_preprocessing():
    folder = DATA / "imagenet-sample" / "calib"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder} (set ONNXQ_DATA)")
    spec = InputSpec("input", ("batch", 3, 224, 224), F32)
    eff = ImageSpec(resize="short-side", short_side=256, interpolation="bicubic", scale=1.0,
                    mean=127.0, std=128.0, channel_order="RGB", layout="NCHW")
    source = take(from_images(folder, [spec], eff), 2)
    feeds = list(validated(source, [spec]))
    assert len(feeds) == 2
    for feed in feeds:
        x = feed["input"]
        assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
        assert x.min() >= -127 / 128 - 1e-6 and x.max() <= 1.0 + 1e-6 and x.std() > 0.1
