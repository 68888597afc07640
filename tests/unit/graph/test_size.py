"""graph.size.payload_bytes counts every tensor a model holds: initializers, Constant nodes, subgraphs."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxq.graph.size import fits_protobuf, payload_bytes


def test_payload_counts_initializers_constants_and_bodies() -> None:
    w = numpy_helper.from_array(np.zeros((10, 10), np.float32), "W")  # 400 bytes
    body_init = numpy_helper.from_array(np.zeros(8, np.int64), "K")  # 64
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.zeros(5, np.float64))),  # 40
         helper.make_node("Add", ["x", "c"], ["t"])],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.DOUBLE, [5])], [body_init])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.DOUBLE, [5])])
    nodes = [helper.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0]),  # not a tensor attribute
             helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.zeros(3, np.int8))),  # 3
             helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=other)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                                           helper.make_tensor_value_info("x", TensorProto.DOUBLE, [5])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [5])], [w])
    model = helper.make_model(graph)
    assert payload_bytes(model) == 400 + 64 + 40 + 3
    assert fits_protobuf(model)
