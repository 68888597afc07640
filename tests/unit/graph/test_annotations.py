"""graph.annotations: value_info names found and kept in every scope (If bodies, nested)."""

from __future__ import annotations

import onnx
from onnx import TensorProto as TP
from onnx import helper

from onnxq.graph.annotations import annotated, keep_annotations
from onnxq.graph.names import proto_graphs


def _vi(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TP.FLOAT, [2])


def _branch(name: str, out: str, inner: onnx.GraphProto | None = None) -> onnx.GraphProto:
    nodes = [helper.make_node("Identity", ["x"], [f"{name}_t"]), helper.make_node("Identity", [f"{name}_t"], [out])]
    if inner is not None:
        nodes.append(helper.make_node("If", ["c"], [f"{name}_if"], then_branch=inner, else_branch=inner))
    return helper.make_graph(nodes, name, [], [_vi(out)], value_info=[_vi(f"{name}_t")])


def _model() -> onnx.ModelProto:
    inner = _branch("inner", "io")
    top = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"]),
         helper.make_node("If", ["c"], ["y"], then_branch=_branch("then", "to", inner),
                          else_branch=_branch("else", "eo"))],
        "top", [_vi("x"), helper.make_tensor_value_info("c", TP.BOOL, [])], [_vi("y")], value_info=[_vi("a")])
    return helper.make_model(top)


def test_annotated_names_come_from_every_scope():
    model = _model()
    assert len(proto_graphs(model.graph)) == 5  # top, then, else, inner twice (then_branch, else_branch)
    assert annotated(model) == {"a", "then_t", "else_t", "inner_t"}


def test_keep_annotations_drops_the_others_everywhere_and_keeps_io_types():
    model = _model()
    assert keep_annotations(model, frozenset({"then_t"})) == 4  # a, else_t, inner_t twice
    assert annotated(model) == {"then_t"}
    assert [o.name for o in model.graph.output] == ["y"] and model.graph.input[0].type.tensor_type.elem_type == TP.FLOAT
    assert keep_annotations(model, frozenset({"then_t"})) == 0
