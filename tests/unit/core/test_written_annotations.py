"""quantize writes only the shape annotations (value_info) the input model had: onnxq's inferred shapes steer
onnxruntime's optimizer into slower fusions (graph.annotations), and nobody downstream needs them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxq import api
from onnxq.config import QuantConfig, Target
from onnxq.graph.annotations import annotated


def _model(annotate: tuple[str, ...]) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W"),
                               numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "W2")],
                              value_info=[helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8, 8])
                                          for n in annotate])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_the_written_model_keeps_the_input_annotations_only() -> None:
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(4)]
    for target in (Target.TENSORRT, Target.ORT_CPU):
        for given in ((), ("r",), ("c", "r")):
            result = api.quantize(_model(given), feeds, QuantConfig(target=target))
            assert annotated(result.model) == frozenset(given), (target, given)
            onnx.checker.check_model(result.model, full_check=True)  # types of the rest are inferable
