"""Golden placement cases of the onnxruntime CPU target: where int8 would only cost accuracy.

Each rule of onnxq/placement/ort_rules.py (and the ORT-CPU parts of rules.py) gets a tiny graph, the
expected Q/DQ edges and skip reasons; the mask and normalization cases also run the quantized model in
onnxruntime (default optimizations, as an ort-cpu model is deployed) to show the accuracy failure the
rule prevents, and the integer cases check which QLinear kernels onnxruntime actually forms.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxq import placement
from onnxq.api import quantize
from onnxq.config import ActivationSpec, QuantConfig
from onnxq.placement import plan
from onnxq.placement.ort_rules import (
    rule_float_consumers,
    rule_integer_derived,
    rule_normalization_inputs,
    rule_output_tail,
)
from onnxq.testing import count_ops, model_from_text

ORT = QuantConfig(target="ort-cpu")
ORT_MINMAX = QuantConfig(target="ort-cpu", activations=ActivationSpec(method="minmax"))


def without_rules(monkeypatch, *rules) -> None:
    """Plan (and quantize) for ORT-CPU with ``rules`` switched off, to show what they prevent."""
    kept = tuple(r for r in placement.ORT_CPU.rules if r not in rules)
    monkeypatch.setattr(placement, "ORT_CPU", dataclasses.replace(placement.ORT_CPU, rules=kept))


def act_tensors(p):
    return {s.tensor for s in p.activations()}


def skip_rules(p):
    return {s.node: s.rule for s in p.skips}


def run(model: onnx.ModelProto, feed: dict, optimized: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


def optimized_ops(model: onnx.ModelProto, tmp_path) -> dict:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return count_ops(onnx.load(str(tmp_path / "opt.onnx")))


def sqnr_db(ref: np.ndarray, x: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((ref - x) ** 2.0), 1e-30)))


# Self-attention scores with an additive mask built from an int64 attention mask, as BERT exports do.
ATTENTION = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,6,16] x, int64[1,6] mask) => (float[1,6,16] y) {
  q = MatMul (x, Wq)
  k = MatMul (x, Wk)
  kt = Transpose <perm=[0,2,1]> (k)
  s = MatMul (q, kt)
  m1 = Unsqueeze (mask, one)
  mf = Cast <to=1> (m1)
  inv = Sub (onef, mf)
  bias = Mul (inv, big)
  a = Add (s, bias)
  p = Softmax <axis=-1> (a)
  y = MatMul (p, x)
}
"""


def attention_model() -> onnx.ModelProto:
    return model_from_text(ATTENTION, weights={
        "Wq": (16, 16), "Wk": (16, 16), "one": np.array([1], np.int64),
        "onef": np.array(1.0, np.float32), "big": np.array(-3.4e38, np.float32)})


def attention_feeds(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        mask = np.ones((1, 6), np.int64)
        mask[0, rng.integers(3, 6):] = 0  # padding at the end, as a tokenizer makes
        feeds.append({"x": rng.standard_normal((1, 6, 16)).astype(np.float32), "mask": mask})
    return feeds


def test_mask_from_integer_input_is_never_quantized_and_its_add_stays_float():
    p = plan(attention_model(), ORT)
    acts = act_tensors(p)
    assert not {"mf", "inv", "bias", "a"} & acts  # mask path and masked scores stay float
    assert {"x", "q", "kt", "p"} <= acts  # the MatMul operands are still quantized
    rules = skip_rules(p)
    assert rules["Add_0"] == "integer-derived-operand"
    assert "Add_0" not in p.quantized_nodes


def test_mask_rule_fixes_attention_in_onnxruntime(monkeypatch):
    model, calib, feeds = attention_model(), attention_feeds(16), attention_feeds(8, seed=1)
    ref = np.concatenate([run(model, f) for f in feeds])
    fixed = quantize(model, calib, ORT_MINMAX).model
    good = sqnr_db(ref, np.concatenate([run(fixed, f) for f in feeds]))
    # rule_float_consumers alone also keeps this Add float (Softmax reads it in float): drop both to
    # see what quantizing the mask does
    without_rules(monkeypatch, rule_integer_derived, rule_float_consumers)
    broken = quantize(model, calib, ORT_MINMAX).model
    assert "bias" in {s.tensor for s in plan(model, ORT).activations()}
    bad = sqnr_db(ref, np.concatenate([run(broken, f) for f in feeds]))
    assert good > 20.0, good
    assert bad < 10.0, bad  # one uint8 scale spanning -3.4e38 flattens every attention score


def test_data_tensors_follow_float_inputs_and_lookups_not_shapes():
    from onnxq.graph.query import GraphIndex
    from onnxq.placement.ort_rules import data_tensors

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[1,4] ids, float[1,4,8] x) => (float[1,4,8] y, float[1,4,8] z) {
      e = Gather (table, ids)
      y = Add (e, x)
      sh = Shape (x)
      f = Cast <to=1> (sh)
      z = Mul (x, f8)
      f8 = ConstantOfShape <value=float {2.0}> (sh)
    }
    """
    import onnx_graphsurgeon as gs

    m = onnx.parser.parse_model(text)
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((10, 8), np.float32), "table"))
    index = GraphIndex.build(gs.import_onnx(m))
    data = data_tensors(index)
    assert {"e", "y", "x"} <= data  # an embedding lookup carries data although its indices are integers
    assert not {"sh", "f", "f8"} & data  # shapes are metadata


HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,8,8] x) => (float[1,64,5] y) {
  f = Conv <pads=[1,1,1,1]> (x, W0, B0)
  r = Relu (f)
  box = Conv (r, Wb, Bb)
  sc = Conv (r, Ws, Bs)
  prob = Sigmoid (sc)
  c = Concat <axis=1> (box, prob)
  t = Reshape (c, shape)
  y = Transpose <perm=[0,2,1]> (t)
}
"""


def head_model() -> onnx.ModelProto:
    return model_from_text(HEAD, weights={
        "W0": (8, 8, 3, 3), "B0": (8,), "Wb": (4, 8, 1, 1), "Bb": (4,), "Ws": (1, 8, 1, 1), "Bs": (1,),
        "shape": np.array([1, 5, 64], np.int64)})


def test_tensors_that_only_travel_to_outputs_stay_float():
    p = plan(head_model(), ORT)
    acts = act_tensors(p)
    assert not {"box", "prob", "c", "t"} & acts  # no integer consumer downstream: no Q/DQ
    assert {"x", "r", "sc"} <= acts  # the convs still read int8 (Sigmoid reads its input quantized)
    rules = skip_rules(p)
    assert rules["Concat_0"] == "output-tail" and rules["Reshape_0"] == "output-tail"
    assert {"Conv_1", "Conv_2"} <= set(p.quantized_nodes)


def test_output_tail_keeps_scores_precise_in_onnxruntime(tmp_path, monkeypatch):
    model = head_model()
    rng = np.random.default_rng(0)
    calib = [{"x": 3 * rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(8)]
    q = quantize(model, calib, ORT_MINMAX).model
    ref = np.concatenate([run(model, f) for f in calib])
    good = np.abs(ref[..., 4] - np.concatenate([run(q, f) for f in calib])[..., 4]).mean()
    assert optimized_ops(q, tmp_path)["QLinearConv"] == 2  # the trunk conv and the score conv
    without_rules(monkeypatch, rule_output_tail)
    broken = quantize(model, calib, ORT_MINMAX).model
    bad = np.abs(ref[..., 4] - np.concatenate([run(broken, f) for f in calib])[..., 4]).mean()
    # probabilities keep their own resolution instead of the box offsets' shared uint8 step
    assert good < bad / 2, (good, bad)


TRANSFORMER_BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,6,16] x) => (float[1,6,16] y) {
  h = MatMul (x, W1)
  hb = Add (h, b1)
  r = Add (hb, x)
  n = LayerNormalization <axis=-1> (r, gamma, beta)
  y = MatMul (n, W2)
}
"""


def test_layernorm_input_and_its_residual_add_stay_float_and_matmul_outputs_are_not_requantized(tmp_path):
    model = model_from_text(TRANSFORMER_BLOCK, weights={"W1": (16, 16), "b1": (16,), "W2": (16, 16),
                                                        "gamma": np.ones(16, np.float32),
                                                        "beta": np.zeros(16, np.float32)})
    p = plan(model, ORT)
    acts = act_tensors(p)
    assert acts == {"x", "n"}  # only the MatMul activation inputs
    rules = skip_rules(p)
    assert rules["Add_0"] == "constant-operand"
    assert rules["Add_1"] == "normalization-input"
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 6, 16)).astype(np.float32)} for _ in range(8)]
    q = quantize(model, calib, ORT_MINMAX).model
    ops = optimized_ops(q, tmp_path)
    assert ops.get("MatMulIntegerToFloat", 0) == 1 and ops.get("QLinearMatMul", 0) == 0
    assert sqnr_db(run(model, calib[0]), run(q, calib[0])) > 25.0


RESIDUAL_STREAM = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,6,16] x, float[1,6,16] stream) => (float[1,6,16] y) {
  h = MatMul (x, W1)
  r = Add (h, stream)
  n = LayerNormalization <axis=-1> (r, gamma, beta)
  y = MatMul (n, W2)
}
"""


def test_layernorm_rule_keeps_outlier_channels(monkeypatch):
    """A residual stream with one channel 100x the others: uint8 before LayerNorm loses the rest.

    gamma is 0 on the outlier channel (trained LayerNorms scale such channels down), so the output
    shows how well the ordinary channels survive.
    """
    gamma = np.ones(16, np.float32)
    gamma[3] = 0.0
    model = model_from_text(RESIDUAL_STREAM, weights={"W1": (16, 16), "W2": (16, 16), "gamma": gamma,
                                                      "beta": np.zeros(16, np.float32)})
    rng = np.random.default_rng(0)

    def feed():
        stream = rng.standard_normal((1, 6, 16)).astype(np.float32)
        stream[..., 3] = 200.0 + rng.standard_normal(6).astype(np.float32)  # outlier channel
        return {"x": rng.standard_normal((1, 6, 16)).astype(np.float32), "stream": stream}

    calib, feeds = [feed() for _ in range(8)], [feed() for _ in range(4)]
    ref = np.concatenate([run(model, f) for f in feeds])
    good = sqnr_db(ref, np.concatenate([run(quantize(model, calib, ORT_MINMAX).model, f) for f in feeds]))
    # rule_float_consumers alone also keeps this residual Add float (only LayerNorm reads it)
    without_rules(monkeypatch, rule_normalization_inputs, rule_float_consumers)
    broken = quantize(model, calib, ORT_MINMAX).model
    bad = sqnr_db(ref, np.concatenate([run(broken, f) for f in feeds]))
    assert good > bad + 6.0, (good, bad)


GELU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,16] x) => (float[1,4,16] y) {
  h = MatMul (x, W1)
  d = Div (h, sqrt2)
  e = Erf (d)
  e1 = Add (e, onef)
  m = Mul (h, e1)
  g5 = Mul (m, half)
  y = MatMul (g5, W2)
}
"""


def test_elementwise_ops_feeding_only_float_ops_stay_float():
    model = model_from_text(GELU, weights={"W1": (16, 16), "W2": (16, 16), "sqrt2": np.array(1.4142, np.float32),
                                           "onef": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)})
    p = plan(model, ORT)
    rules = skip_rules(p)
    assert rules["Add_0"] == "constant-operand"  # (1 + erf): the constant is not quantized
    assert rules["Mul_1"] == "constant-operand"
    assert rules["Mul_0"] == "float-consumers"  # its only consumer (x 0.5) runs in float
    assert act_tensors(p) == {"x", "g5"}


RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,8,8] x) => (float[1,10] y) {
  a = Conv <pads=[1,1,1,1]> (x, W1, B1)
  r = Clip (a, lo, hi)
  b = Conv <pads=[1,1,1,1]> (r, W2, B2)
  s = Add (b, x)
  c = Conv <pads=[1,1,1,1]> (s, W3, B3)
  p = GlobalAveragePool (c)
  f = Flatten (p)
  y = Gemm <transB=1> (f, Wf, Bf)
}
"""


def test_cnn_stays_fully_integer_after_onnxruntime_optimization(tmp_path):
    model = model_from_text(RESIDUAL, weights={
        "W1": (8, 8, 3, 3), "B1": (8,), "W2": (8, 8, 3, 3), "B2": (8,), "W3": (8, 8, 3, 3), "B3": (8,),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32), "Wf": (10, 8), "Bf": (10,)})
    p = plan(model, ORT)
    assert {"Conv_0", "Conv_1", "Add_0", "Conv_2", "GlobalAveragePool_0", "Gemm_0"} <= set(p.quantized_nodes)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(8)]
    ops = optimized_ops(quantize(model, calib, ORT_MINMAX).model, tmp_path)
    assert ops["QLinearConv"] == 3 and ops["QLinearAdd"] == 1 and ops["QLinearGlobalAveragePool"] == 1
    assert not {"Conv", "Add", "GlobalAveragePool"} & set(ops)


@pytest.mark.parametrize("case", ["attention", "head"])
def test_tensorrt_target_is_unchanged_by_ort_rules(case):
    """The ORT-CPU rules never run for TensorRT: its plan quantizes weighted-op inputs only."""
    model = attention_model() if case == "attention" else head_model()
    p = plan(model)
    assert {s.rule for s in p.specs} <= {"weighted-op-input", "residual-add-shortcut"}


UINT8_IMAGE = """
<ir_version: 8, opset_import: ["" : 17]>
g (uint8[1,3,8,8] img) => (float[1,8,8,8] y) {
  f = Cast <to=1> (img)
  n = Sub (f, mean)
  y = Conv <pads=[1,1,1,1]> (n, W, B)
}
"""


def test_uint8_image_input_is_data_not_a_mask():
    """Integer-derived but not broadcast onto data: a uint8 image is quantized like a float one."""
    model = model_from_text(UINT8_IMAGE, weights={"mean": np.full((1, 3, 1, 1), 127.0, np.float32),
                                                  "W": (8, 3, 3, 3), "B": (8,)})
    p = plan(model, ORT)
    assert "Conv_0" in p.quantized_nodes and "n" in act_tensors(p)
    assert "integer-derived-operand" not in skip_rules(p).values()


PADDING_MASK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,6] x, int64[1,1,6] mask) => (float[1,8,6] y) {
  mf = Cast <to=1> (mask)
  h = Mul (x, mf)
  y = Conv <pads=[1]> (h, W, B)
}
"""


def test_multiplicative_mask_stays_float_but_its_product_is_data():
    model = model_from_text(PADDING_MASK, weights={"W": (8, 8, 3), "B": (8,)})
    p = plan(model, ORT)
    assert skip_rules(p)["Mul_0"] == "integer-derived-operand"
    assert "mf" not in act_tensors(p)
    assert "h" in act_tensors(p) and "Conv_0" in p.quantized_nodes  # zeros where masked: ordinary data
