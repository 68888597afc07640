"""graph.names.UniqueNames: the one generator of fresh node and tensor names."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from onnxq.graph.names import UniqueNames


def test_new_gives_the_base_then_suffixes_from_1() -> None:
    names = UniqueNames()
    assert [names.new("t") for _ in range(3)] == ["t", "t_1", "t_2"]


def test_new_skips_existing_names() -> None:
    names = UniqueNames(["t", "t_1", "t_3"])
    assert [names.new("t") for _ in range(3)] == ["t_2", "t_4", "t_5"]
    assert "t_4" in names and "t_6" not in names


def test_numbered_always_suffixes_with_a_counter_per_base() -> None:
    names = UniqueNames(["Conv_1", "Relu"])
    assert [names.numbered("Conv") for _ in range(3)] == ["Conv_0", "Conv_2", "Conv_3"]
    assert names.numbered("Relu") == "Relu_0"


def test_both_schemes_avoid_each_others_names() -> None:
    names = UniqueNames()
    assert names.numbered("a") == "a_0"
    assert names.new("a_0") == "a_0_1"
    assert names.new("b") == "b"
    assert names.new("b") == "b_1"
    assert names.numbered("b") == "b_0"
    assert names.numbered("b") == "b_2"  # b_1 was handed out by new()


def test_deterministic() -> None:
    def run() -> list[str]:
        names = UniqueNames(["x", "x_1", "y_0"])
        return [names.new("x"), names.numbered("y"), names.new("x"), names.numbered("y"), names.new("z")]

    assert run() == run() == ["x_2", "y_1", "x_3", "y_2", "z"]


def _gs_graph() -> gs.Graph:
    x = gs.Variable("x", dtype=np.float32, shape=[1])
    w = gs.Constant("w", np.ones(1, np.float32))
    y = gs.Variable("y", dtype=np.float32, shape=[1])
    return gs.Graph(nodes=[gs.Node("Mul", "mul", inputs=[x, w], outputs=[y])], inputs=[x], outputs=[y])


def test_of_graph_avoids_tensor_and_node_names() -> None:
    names = UniqueNames.of_graph(_gs_graph())
    assert [names.new(n) for n in ("x", "w", "y", "mul", "free")] == ["x_1", "w_1", "y_1", "mul_1", "free"]


def test_of_graph_without_node_names() -> None:
    names = UniqueNames.of_graph(_gs_graph(), node_names=False)
    assert names.new("mul") == "mul"
    assert names.new("w") == "w_1"


def test_of_proto_avoids_every_tensor_name() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"], name="add")], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("a", "unread")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])],
        [helper.make_tensor("b", TensorProto.FLOAT, [1], [1.0]), helper.make_tensor("dead", TensorProto.FLOAT, [1], [0.0])],
    )
    names = UniqueNames.of_proto(graph)
    assert all(n in names for n in ("a", "b", "c", "unread", "dead", "add"))
    assert "add" not in UniqueNames.of_proto(graph, node_names=False)
    assert names.new("c") == "c_1"
