"""graph.export.export_onnx: the same model as onnx-graphsurgeon's export, with each big weight copied once."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from onnxq.graph.export import SWAP_MIN_BYTES, export_onnx


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "W")  # 4.6 KB
    small = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "B")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["k"], name="const",
                         value=numpy_helper.from_array(rng.standard_normal((1, 16, 8, 8)).astype(np.float32))),
        helper.make_node("Add", ["c", "k"], ["a"], name="add"),
        helper.make_node("Reshape", ["a", "shape"], ["Y"], name="reshape"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1024])], [big, small, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _graph() -> gs.Graph:
    graph = gs.import_onnx(_model())
    # a new big constant from numpy, as the rewrite makes them (quantized weights)
    add = next(n for n in graph.nodes if n.op == "Add")
    extra = gs.Constant("extra", np.arange(16 * 8 * 8, dtype=np.float32).reshape(1, 16, 8, 8))
    out = gs.Variable("a2", dtype=np.float32, shape=[1, 16, 8, 8])
    graph.nodes.append(gs.Node("Mul", "mul", inputs=[add.outputs[0], extra], outputs=[out]))
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    reshape.inputs[0] = out
    return graph.toposort()


def test_same_message_as_graphsurgeon_export() -> None:
    ours, theirs = export_onnx(_graph()), gs.export_onnx(_graph())
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    big = [t for t in ours.graph.initializer if numpy_helper.to_array(t).nbytes >= SWAP_MIN_BYTES]
    assert {t.name for t in big} >= {"W", "extra"}  # the swap did act on both kinds of constant
    onnx.checker.check_model(ours, full_check=True)


def test_the_graph_keeps_its_values() -> None:
    graph = _graph()
    before = {name: t._values for name, t in graph.tensors().items() if isinstance(t, gs.Constant)}
    export_onnx(graph)
    after = {name: t._values for name, t in graph.tensors().items() if isinstance(t, gs.Constant)}
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)
    np.testing.assert_array_equal(graph.tensors()["extra"].values.ravel(), np.arange(1024, dtype=np.float32))
