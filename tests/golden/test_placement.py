"""Golden placement cases: a tiny model, the Q/DQ edges expected, and the skip reasons.

Each case states which (node, input index) edges must read a DequantizeLinear under the TensorRT target,
with which per-channel axis, and which nodes stay float and why.
"""

from __future__ import annotations

import pytest

from onnxq.config import QuantConfig, WeightSpec
from onnxq.placement import plan
from onnxq.records import Role
from onnxq.testing import model_from_text


def edges(qplan, role=None):
    return {(node, idx) for s in qplan.specs if role is None or s.role is role for node, idx in s.consumers}


def axes(qplan):
    return {s.tensor: s.axis for s in qplan.weights()}


def skip_rules(qplan):
    return {s.node: s.rule for s in qplan.skips}


CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,8,8,8] y) {
  y = Conv <pads=[1,1,1,1], group=1> (x, W, B)
}
"""


def test_conv_quantizes_activation_and_weight_not_bias_nor_output():
    m = model_from_text(CONV, weights={"W": (8, 3, 3, 3), "B": (8,)})
    p = plan(m)
    assert p.quantized_nodes == ("Conv_0",)
    specs = {s.tensor: s for s in p.specs}
    assert set(specs) == {"x", "W"}
    assert specs["x"].role is Role.ACTIVATION and specs["x"].dtype == "int8" and specs["x"].symmetric
    assert specs["W"].role is Role.WEIGHT and specs["W"].axis == 0
    assert "y" not in specs and "B" not in specs


CONV_BN_RELU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,8,8,8] y) {
  c = Conv <pads=[1,1,1,1]> (x, W)
  b = BatchNormalization (c, s, bias, mean, var)
  y = Relu (b)
}
"""


def test_conv_bn_relu_after_preprocess_has_one_quantized_conv_and_float_relu():
    from onnxq.api import prepare

    m = model_from_text(CONV_BN_RELU, weights={"W": (8, 3, 3, 3), "s": (8,), "bias": (8,), "mean": (8,),
                                               "var": __import__("numpy").ones(8, "float32")})
    pre, notes = prepare(m)
    assert [n.op_type for n in pre.graph.node] == ["Conv", "Relu"]
    p = plan(pre)
    assert {s.tensor for s in p.activations()} == {"x"}
    relu = next(n.name for n in pre.graph.node if n.op_type == "Relu")
    assert skip_rules(p)[relu] == "not-a-quantized-op"


RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,8,8] x) => (float[1,8,8,8] y) {
  a = Conv <pads=[1,1,1,1]> (x, W1)
  r = Relu (a)
  b = Conv <pads=[1,1,1,1]> (r, W2)
  y = Add (b, x)
}
"""


def test_residual_add_quantizes_the_shortcut_only():
    m = model_from_text(RESIDUAL, weights={"W1": (8, 8, 3, 3), "W2": (8, 8, 3, 3)})
    m.graph.node[3].name = "add"
    p = plan(m)
    e = edges(p, Role.ACTIVATION)
    assert ("add", 1) in e  # x: the shortcut
    assert ("add", 0) not in e  # b: the Conv branch TensorRT fuses
    assert "b" not in {s.tensor for s in p.specs}


CONCAT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,8,8] x) => (float[1,8,8,8] y) {
  a = Conv (x, W1)
  b = Conv (x, W2)
  c = Concat <axis=1> (a, b)
  y = Conv (c, W3)
  z = Conv (a, W4)
}
"""


def test_concat_inputs_and_output_share_one_scale_group():
    text = CONCAT.replace("=> (float[1,8,8,8] y)", "=> (float[1,8,8,8] y, float[1,4,8,8] z)")
    m = model_from_text(text, weights={"W1": (4, 4, 1, 1), "W2": (4, 4, 1, 1), "W3": (8, 8, 1, 1),
                                       "W4": (4, 4, 1, 1)})
    p = plan(m)
    groups = {s.tensor: s.group for s in p.activations()}
    assert groups["c"] is not None and groups["c"] == groups["a"]  # a is quantized (feeds W4 conv) and concatenated


@pytest.mark.parametrize("trans_b,axis", [(0, 1), (1, 0)])
def test_gemm_weight_axis_follows_transB(trans_b, axis):
    shape = (4, 16) if trans_b else (16, 4)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,16] x) => (float[2,4] y) {{ y = Gemm <transB={trans_b}> (x, W, B) }}
    """
    p = plan(model_from_text(text, weights={"W": shape, "B": (4,)}))
    assert axes(p) == {"W": axis}
    assert {s.tensor for s in p.activations()} == {"x"}


def test_matmul_constant_b_uses_last_axis_and_dynamic_b_is_activation():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2,16] x, float[4,8] k) => (float[2,4] y, float[4,4] z) {
      y = MatMul (x, W)
      z = MatMul (k, kt)
      kt = Transpose (k)
    }
    """
    # topological order matters for the parser-built model; rebuild in order
    text = text.replace("z = MatMul (k, kt)\n      kt = Transpose (k)", "kt = Transpose (k)\n      z = MatMul (k, kt)")
    p = plan(model_from_text(text, weights={"W": (16, 4)}))
    assert axes(p) == {"W": 1}
    assert {s.tensor for s in p.activations()} == {"x", "k", "kt"}


def test_convtranspose_axis_1_and_per_tensor_fallback():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,4,4] x) => (float[1,4,8,8] y) { y = ConvTranspose <strides=[2,2]> (x, W) }
    """
    m = model_from_text(text, weights={"W": (8, 4, 2, 2)})
    assert axes(plan(m)) == {"W": 1}
    cfg = QuantConfig(weights=WeightSpec(convtranspose_per_channel=False))
    assert axes(plan(m, cfg)) == {"W": None}


def test_depthwise_conv_is_per_channel_on_axis_0():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,8,8] x) => (float[1,8,8,8] y) { y = Conv <group=8, pads=[1,1,1,1]> (x, W) }
    """
    p = plan(model_from_text(text, weights={"W": (8, 1, 3, 3)}))
    assert axes(p) == {"W": 0}


def test_integer_inputs_are_never_quantized():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (int64[2,4] ids, float[2,4] x) => (int64[2,3] y, float[2,3] z) {
      y = MatMul (ids, Wi)
      z = MatMul (x, W)
    }
    """
    import numpy as np

    m = model_from_text(text, weights={"Wi": np.ones((4, 3), np.int64), "W": (4, 3)})
    p = plan(m)
    assert {s.tensor for s in p.specs} == {"x", "W"}
    int_node = m.graph.node[0].name
    assert skip_rules(p)[int_node] == "integer-tensor"


def test_user_exclusions_win_by_regex_and_op_type():
    m = model_from_text(RESIDUAL, weights={"W1": (8, 8, 3, 3), "W2": (8, 8, 3, 3)})
    names = ["/model/head/conv1", "/model/head/relu", "/model/body/conv2", "add"]
    for node, name in zip(m.graph.node, names):
        node.name = name
    p = plan(m, QuantConfig(exclude_nodes=("/head/.*",)))
    assert "/model/head/conv1" not in p.quantized_nodes
    assert skip_rules(p)["/model/head/conv1"] == "user-exclude"
    assert "/model/body/conv2" in p.quantized_nodes
    p2 = plan(m, QuantConfig(exclude_ops=("Conv",)))
    assert not p2.weights()


def test_ort_cpu_target_quantizes_outputs_after_relu_and_int32_bias():
    m = model_from_text(RESIDUAL.replace("a = Conv <pads=[1,1,1,1]> (x, W1)", "a = Conv <pads=[1,1,1,1]> (x, W1, B1)"),
                        weights={"W1": (8, 8, 3, 3), "W2": (8, 8, 3, 3), "B1": (8,)})
    p = plan(m, QuantConfig(target="ort-cpu"))
    acts = {s.tensor: s for s in p.activations()}
    assert "r" in acts and "a" not in acts  # quantized after the Relu so onnxruntime fuses it
    assert acts["x"].dtype == "uint8" and not acts["x"].symmetric
    bias = p.biases()
    assert len(bias) == 1 and bias[0].dtype == "int32" and bias[0].bias_of == ("x", "W1")


def test_plan_round_trips_through_json():
    import json

    from onnxq.records import QuantPlan

    m = model_from_text(RESIDUAL, weights={"W1": (8, 8, 3, 3), "W2": (8, 8, 3, 3)})
    p = plan(m)
    assert QuantPlan.from_dict(json.loads(json.dumps(p.to_dict()))) == p
