"""Models that are already quantized: recognised in every form, shown by inspect, refused by quantize."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import conv_relu
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from onnxq.cli import main
from onnxq.graph.existing import existing_quantization
from onnxq.testing import model_from_text

MLP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,16] x) => (float[N,8] y) {
  h = MatMul (x, W)
  y = Relu (h)
}
"""


def _onnxq(conv_model, tmp_path, target: str):
    out = tmp_path / f"{target}.onnx"
    assert main(["-q", "quantize", str(conv_model), "-o", str(out), "--random", "4", "--target", target]) == 0
    return out


@pytest.mark.parametrize("target,act,weights_kind", [("tensorrt", "int8", "weight"), ("ort-cpu", "uint8", "weight")])
def test_onnxq_output_is_recognised_shown_and_refused(conv_model, tmp_path, capsys, target, act, weights_kind):
    quant = _onnxq(conv_model, tmp_path, target)
    found = existing_quantization(onnx.load(str(quant)))
    assert found is not None and found.ops["DequantizeLinear"] >= 2
    weights = [t for t in found.tensors if t.kind == "weight"]
    assert len(weights) == 1 and weights[0].axis == 0 and weights[0].dtype == "int8"
    assert {t.dtype for t in found.tensors if t.kind == "activation"} == {act}
    capsys.readouterr()
    assert main(["inspect", str(quant), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {"weight", "activation"} <= {t["kind"] for t in shown["tensors"]}  # weights are not re-planned
    before = quant.read_bytes()
    out = tmp_path / "again.onnx"
    assert main(["quantize", str(quant), "-o", str(out), "--random", "2"]) == 2
    err = capsys.readouterr().err
    assert "already quantized" in err and "float model" in err and "Traceback" not in err
    assert not out.exists() and quant.read_bytes() == before


def test_dynamic_quantization_is_recognised(tmp_path, capsys):
    src, dyn = tmp_path / "mlp.onnx", tmp_path / "mlp.dyn.onnx"
    onnx.save(model_from_text(MLP, weights={"W": (16, 8)}), str(src))
    quantize_dynamic(str(src), str(dyn), weight_type=QuantType.QInt8)
    found = existing_quantization(onnx.load(str(dyn)))
    assert found is not None
    assert set(found.ops) & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    assert main(["inspect", str(dyn)]) == 0
    assert "already quantized" in capsys.readouterr().out
    assert main(["quantize", str(dyn), "-o", str(tmp_path / "q.onnx"), "--random", "2"]) == 2


def _qlinear_conv() -> onnx.ModelProto:
    c = lambda name, value: numpy_helper.from_array(np.asarray(value), name)  # noqa: E731
    inits = [c("xs", np.float32(0.1)), c("xz", np.uint8(128)), c("w", np.ones((2, 1, 1, 1), np.int8)),
             c("ws", np.array([0.05, 0.02], np.float32)), c("wz", np.zeros(2, np.int8)),
             c("ys", np.float32(0.2)), c("yz", np.uint8(128))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_integer_kernels_are_recognised():
    found = existing_quantization(_qlinear_conv())
    assert found.ops == {"QuantizeLinear": 1, "QLinearConv": 1, "DequantizeLinear": 1}
    assert "QLinearConv x1" in found.summary()
    assert existing_quantization(conv_relu()) is None
