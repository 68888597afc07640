"""Random data respects what the graph allows its integer inputs (issue 12: MiniLM ``--random`` failed
inside onnxruntime, "Gather idx=87 must be within [-2, 1]").

The ranges come from the graph (:mod:`onnxq.graph.int_inputs`): token ids below the rows of the table
they index (through Unsqueeze/Cast/Reshape), masks as 0/1 rows with at least one 1, a warning naming the
input when no bound can be read, and a ConfigError when no value can be valid.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from helpers import MODELS, ort_run

from onnxq.cli import main
from onnxq.collect.feeds import InputSpec, input_specs_from_model
from onnxq.collect.random_feeds import random_data
from onnxq.errors import ConfigError
from onnxq.graph.int_inputs import integer_input_ranges
from onnxq.testing import model_from_text

AXES = {"ax": np.array([2], np.int64), "ax1": np.array([1], np.int64), "one": np.array(1.0, np.float32),
        "neg": np.array(-1e4, np.float32)}

# Token ids index a 50-row table (after an Unsqueeze and a Cast to int32), token types a 2-row table,
# and a padding mask weights a mean (Unsqueeze, Cast to float, Mul with the hidden states).
BERTISH = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[batch,seq] ids, int64[batch,seq] mask, int64[batch,seq] types) => (float[batch,4] y) {
  u = Unsqueeze (ids, ax)
  i32 = Cast <to=6> (u)
  r = Reshape (i32, shp)
  we = Gather (E, r)
  te = Gather (T, types)
  h = Add (we, te)
  m1 = Unsqueeze (mask, ax)
  mf = Cast <to=1> (m1)
  hm = Mul (h, mf)
  s = ReduceSum <keepdims=0> (hm, ax1)
  n = ReduceSum <keepdims=0> (mf, ax1)
  c = Clip (n, one)
  a = Div (s, c)
  y = MatMul (a, W)
}
"""
BERTISH_WEIGHTS = {**AXES, "E": (50, 4), "T": (2, 4), "W": (4, 4), "shp": np.array([0, -1], np.int64)}

# An additive attention mask: scores + (1 - m) * -1e4.
ATTENTION = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch,seq] scores, int32[batch,seq] m) => (float[batch,seq] y) {
  mf = Cast <to=1> (m)
  inv = Sub (one, mf)
  bias = Mul (inv, neg)
  y = Add (scores, bias)
}
"""


def _specs(text, weights):
    model = model_from_text(text, weights=weights)
    return model, {s.name: s for s in input_specs_from_model(model)}


def test_token_ids_stay_below_the_rows_of_the_table_they_index_and_the_model_runs():
    model, specs = _specs(BERTISH, BERTISH_WEIGHTS)
    assert (specs["ids"].values.kind, specs["ids"].values.high) == ("index", 50)
    assert (specs["types"].values.kind, specs["types"].values.high) == ("index", 2)
    assert specs["mask"].values.kind == "mask"
    feeds = list(random_data(list(specs.values()), 20, dims={"batch": 3, "seq": 16}))
    ids = np.stack([f["ids"] for f in feeds])
    types = np.stack([f["types"] for f in feeds])
    assert ids.min() >= 0 and ids.max() < 50 and ids.max() > 2  # spread over the table, not just 0/1
    assert set(np.unique(types)) == {0, 1}
    for feed in feeds:
        assert feed["ids"].dtype == np.int64 and feed["ids"].shape == (3, 16)
        ort_run(model, feed, optimize=True)  # onnxruntime rejects an index outside the table


def test_masks_are_zero_one_rows_that_start_with_a_one():
    _, specs = _specs(BERTISH, BERTISH_WEIGHTS)
    model, attention = _specs(ATTENTION, AXES)
    assert attention["m"].values.kind == "mask"
    for spec in (specs["mask"], attention["m"]):
        masks = np.stack([f[spec.name] for f in random_data([spec], 30, dims={"batch": 4, "seq": 9})])
        assert masks.dtype == spec.dtype and set(np.unique(masks)) == {0, 1}
        assert (masks[..., 0] == 1).all()  # every row keeps a token: no all-masked softmax or mean
        assert (np.diff(masks, axis=-1) <= 0).all()  # a padding mask: ones, then zeros
        assert (masks == 0).any()  # the masked positions are exercised too
    for feed in random_data(list(attention.values()), 3, dims={"batch": 2, "seq": 5}):
        assert np.isfinite(ort_run(model, feed, optimize=True)[0]).all()


def test_mask_compared_or_cast_to_bool_is_a_mask_and_an_index_use_wins():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[1,8] m, int64[1,8] ids) => (bool[1,8] y, float[1,8,4] z) {
      b = Cast <to=9> (m)
      pad = Equal (ids, zero)
      y = And (b, pad)
      z = Gather (E, ids)
    }
    """
    _, specs = _specs(text, {"zero": np.array(0, np.int64), "E": (30, 4)})
    assert specs["m"].values.kind == "mask"
    assert (specs["ids"].values.kind, specs["ids"].values.high) == ("index", 30)


def test_the_smallest_table_bounds_an_input_that_indexes_two():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[1,8] ids) => (float[1,8,4] a, float[1,8,4] b) {
      a = Gather (E, ids)
      c = Concat <axis=1> (ids, ids)
      b0 = Gather <axis=1> (P, c)
      b = Transpose <perm=[1,0,2,3]> (b0)
    }
    """
    _, specs = _specs(text, {"E": (30, 4), "P": (4, 7, 8, 4)})
    assert (specs["ids"].values.kind, specs["ids"].values.high) == ("index", 7)


def test_uint8_image_is_a_number_with_its_full_range_and_shape_only_inputs_are_free(caplog):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (uint8[1,3,4,4] img, int64[1,5] s) => (float[1,2,4,4] y, int64[2] t) {
      f = Cast <to=1> (img)
      d = Div (f, k)
      y = Conv (d, W)
      t = Shape (s)
    }
    """
    _, specs = _specs(text, {"k": np.array(255.0, np.float32), "W": (2, 3, 1, 1)})
    assert (specs["img"].values.kind, specs["img"].values.low, specs["img"].values.high) == ("number", 0, 256)
    assert specs["s"].values.kind == "free"
    with caplog.at_level(logging.WARNING):
        feed = next(iter(random_data(list(specs.values()), 1)))
    assert feed["img"].max() > 100 and not caplog.records


def test_no_bound_warns_naming_the_input_and_range_and_an_empty_table_is_refused(caplog):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[1,4] k, int64[1,4] e) => (int64[1,4] y, float[1,4,3] z) {
      y = Add (k, k)
      z = Gather (E, e)
    }
    """
    _, specs = _specs(text, {"E": np.zeros((0, 3), np.float32)})
    assert specs["k"].values.kind == "unknown" and specs["e"].values.kind == "impossible"
    with caplog.at_level(logging.WARNING, logger="onnxq.collect.random_feeds"):
        feed = next(iter(random_data([specs["k"]], 2)))
    assert feed["k"].min() >= 0 and feed["k"].max() < 2
    (record,) = caplog.records
    assert "'k'" in record.getMessage() and "Add" in record.getMessage() and "[0, 2)" in record.getMessage()
    assert "\n" not in record.getMessage()
    with pytest.raises(ConfigError, match=r"input 'e' indexes Gather .* no rows.*give real data"):
        random_data([specs["e"]], 1)


def test_explicit_ranges_and_specs_without_graph_ranges_keep_their_behaviour():
    _, specs = _specs(BERTISH, BERTISH_WEIGHTS)
    feed = next(iter(random_data([specs["ids"]], 1, dims={"batch": 1, "seq": 64}, low=100, high=200)))
    assert feed["ids"].min() >= 100  # the caller's range wins over the graph's
    plain = next(iter(random_data([InputSpec("q", (1, 500), np.int64)], 1)))["q"]
    assert plain.min() >= 0 and plain.max() < 100 and plain.max() > 50


def test_ranges_are_computed_only_for_integer_inputs():
    model = model_from_text(ATTENTION, weights=AXES)
    assert set(integer_input_ranges(model)) == {"m"}
    assert integer_input_ranges(model, ["scores"]) == {}


def test_quantize_random_on_a_token_model_runs_end_to_end(tmp_path, capsys):
    """Fails without graph ranges: ids in [0, 100) overflow the 50-row table inside onnxruntime."""
    path, out = tmp_path / "bert.onnx", tmp_path / "bert.int8.onnx"
    onnx.save(model_from_text(BERTISH, weights=BERTISH_WEIGHTS), str(path))
    code = main(["quantize", str(path), "-o", str(out), "--random", "4", "--dim", "batch=1",
                 "--dim", "seq=32"])
    assert code == 0, capsys.readouterr().err
    assert out.exists()


MINILM = MODELS / "minilm_l6_v2.onnx"


@pytest.mark.slow  # a real model quantized end to end
@pytest.mark.skipif(not MINILM.exists(), reason="MiniLM is built by models/minilm_l6_v2.py (ONNXQ_MODELS)")
def test_quantize_random_on_minilm(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code = main(["quantize", str(MINILM), "-o", str(out), "--random", "4", "--dim", "batch=1",
                 "--dim", "sequence=32"])
    assert code == 0, capsys.readouterr().err
    assert out.exists()
