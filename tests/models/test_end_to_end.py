"""End to end on tiny models: quantize, save, reload, run in onnxruntime, compare with float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import ort_run, random_feeds

import onnxq
from onnxq.analysis.metrics import sqnr_db
from onnxq.api import quantize
from onnxq.config import ActivationSpec, QuantConfig
from onnxq.testing import count_ops, dq_inputs, model_from_text

RESNET_BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,12,12] x) => (float[1,10] y) {
  a = Conv <pads=[1,1,1,1]> (x, W1, B1)
  r = Relu (a)
  b = Conv <pads=[1,1,1,1]> (r, W2, B2)
  s = Add (b, x)
  t = Relu (s)
  p = GlobalAveragePool (t)
  f = Flatten (p)
  y = Gemm <transB=1> (f, Wf, Bf)
}
"""

MLP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4,32] x) => (float[4,8] y) {
  h = MatMul (x, W1)
  hb = Add (h, B1)
  r = Relu (hb)
  y = MatMul (r, W2)
}
"""

ATTENTION = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,16,32] x) => (float[1,16,32] y) {
  q = MatMul (x, Wq)
  k = MatMul (x, Wk)
  v = MatMul (x, Wv)
  kt = Transpose <perm=[0,2,1]> (k)
  s = MatMul (q, kt)
  sc = Mul (s, scale)
  p = Softmax <axis=-1> (sc)
  o = MatMul (p, v)
  y = Add (o, x)
}
"""

MODELS = {
    "resnet_block": (RESNET_BLOCK, {"W1": (8, 8, 3, 3), "B1": (8,), "W2": (8, 8, 3, 3), "B2": (8,),
                                    "Wf": (10, 8), "Bf": (10,)}, (1, 8, 12, 12)),
    "mlp": (MLP, {"W1": (32, 64), "B1": (64,), "W2": (64, 8)}, (4, 32)),
    # weights scaled like a trained layer (1/sqrt(fan_in)), so attention scores are not one-hot
    "attention": (ATTENTION, {k: np.random.default_rng(i).standard_normal((32, 32)).astype(np.float32) / np.float32(np.sqrt(32))
                              for i, k in enumerate(("Wq", "Wk", "Wv"))} | {
                              "scale": np.array(1 / np.sqrt(32), np.float32)}, (1, 16, 32)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("target", ["tensorrt", "ort-cpu"])
@pytest.mark.parametrize("method", ["minmax", "entropy", "mse", "percentile"])
def test_quantized_tiny_models_run_and_stay_close_to_float(tmp_path, name, target, method):
    text, weights, shape = MODELS[name]
    model = model_from_text(text, weights=weights)
    cfg = QuantConfig(target=target, activations=ActivationSpec(method=method))
    result = quantize(model, random_feeds(shape, 16), cfg)
    path = result.save(tmp_path / "q.onnx")
    saved = onnx.load(str(path))
    onnx.checker.check_model(saved, full_check=True)
    assert saved.producer_name == "onnxq"
    assert {p.key for p in saved.metadata_props} >= {"onnxq.version", "onnxq.config"}
    for feed in random_feeds(shape, 4, seed=7):
        ref = ort_run(model, feed)[0]
        assert sqnr_db(ref, ort_run(saved, feed)[0]) > 20.0
        assert sqnr_db(ref, ort_run(saved, feed, optimize=(target == "ort-cpu"))[0]) > 20.0


def test_every_weighted_node_reads_dequantized_inputs():
    text, weights, shape = MODELS["resnet_block"]
    result = quantize(model_from_text(text, weights=weights), random_feeds(shape, 16))
    flags = dq_inputs(result.model)
    for node in result.model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert flags[node.name][:2] == [True, True], node.name
            assert not (len(flags[node.name]) > 2 and flags[node.name][2]), "bias must stay float for TensorRT"
    assert count_ops(result.model)["QuantizeLinear"] == count_ops(result.model)["DequantizeLinear"]


def test_same_inputs_give_identical_bytes(tmp_path):
    text, weights, shape = MODELS["resnet_block"]
    model = model_from_text(text, weights=weights)
    cfg = QuantConfig(activations=ActivationSpec(method="entropy"))
    a = quantize(model, random_feeds(shape, 16), cfg).save(tmp_path / "a.onnx").read_bytes()
    b = quantize(model, random_feeds(shape, 16), cfg).save(tmp_path / "b.onnx").read_bytes()
    assert a == b


def test_input_model_object_is_not_modified():
    text, weights, shape = MODELS["mlp"]
    model = model_from_text(text, weights=weights)
    before = model.SerializeToString()
    quantize(model, random_feeds(shape, 16))
    assert model.SerializeToString() == before


def test_public_api_surface():
    for name in ("quantize", "QuantConfig", "ActivationSpec", "WeightSpec", "load_model", "plan"):
        assert hasattr(onnxq, name)
