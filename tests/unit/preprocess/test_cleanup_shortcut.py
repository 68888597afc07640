"""fold_constants skips graphsurgeon's round trip when it would change nothing but the node order: the
shortcut must give what the round trip gives, and must not be taken when the round trip acts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.preprocess import cleanup

FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _vi(name, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


W = _init("w", np.ones((4, 3, 1, 1), np.float32))
X = _vi("x", ["N", 3, 4, 4])
Y = _vi("y", None)


def _shape_gather(index: int, batch="N") -> onnx.ModelProto:
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "k"], ["d"], axis=0),
             helper.make_node("Unsqueeze", ["d", "ax"], ["u"]),
             helper.make_node("Concat", ["u", "m1"], ["t"], axis=0), helper.make_node("Reshape", ["x", "t"], ["y"])]
    inits = [_init("k", np.array(index, np.int64)), _init("ax", np.array([0], np.int64)),
             _init("m1", np.array([-1], np.int64))]
    return _model(nodes, [_vi("x", [batch, 3, 4, 4])], [Y], inits)


CASES = {
    # name: (model, whether graphsurgeon has nothing to do; None: the shortcut is not taken although
    # graphsurgeon changes nothing, the conservative side)
    "conv relu": (_model([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                         [X], [Y], [W]), True),
    "branches out of level order": (_model(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Sigmoid", ["x"], ["c"]), helper.make_node("Add", ["b", "c"], ["y"])], [X], [Y]), True),
    "dynamic dim gathered": (_shape_gather(0), True),
    "static dim gathered": (_shape_gather(1), False),
    "static shape": (_shape_gather(0, batch=2), False),
    "constant node": (_model([helper.make_node("Constant", [], ["k"], value=_init("v", np.float32(2))),
                              helper.make_node("Mul", ["x", "k"], ["y"])], [X], [Y]), False),
    "identity": (_model([helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Relu", ["i"], ["y"])],
                        [X], [Y]), False),
    "all-constant node": (_model([helper.make_node("Add", ["w", "w"], ["w2"]),
                                  helper.make_node("Conv", ["x", "w2"], ["y"])], [X], [Y], [W]), False),
    "dead node": (_model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["z"])],
                         [X], [Y]), False),
    "unused initializer": (_model([helper.make_node("Relu", ["x"], ["y"])], [X], [Y], [W]), False),
    "unread output": (_model([helper.make_node("Split", ["x", "sp"], ["y", "rest"], axis=1)], [X], [Y],
                             [_init("sp", np.array([1, 2], np.int64))]), None),
    "cast elision": (_model([helper.make_node("Cast", ["n"], ["f"], to=FLOAT),
                             helper.make_node("Add", ["f", "one"], ["g"]),
                             helper.make_node("Cast", ["g"], ["y"], to=TensorProto.INT64)],
                            [_vi("n", [2], TensorProto.INT64)], [_vi("y", [2], TensorProto.INT64)],
                            [_init("one", np.ones(2, np.float32))]), False),
    "quantize linear of constants": (_model(
        [helper.make_node("QuantizeLinear", ["w", "sc"], ["wq"]), helper.make_node("DequantizeLinear", ["wq", "sc"], ["wd"]),
         helper.make_node("Conv", ["x", "wd"], ["y"])], [X], [Y], [W, _init("sc", np.float32(0.1))]), True),
}


def _canonical(model: onnx.ModelProto):
    """What folding decides: the nodes in order, the initializers' values, the interface (the order of
    initializers and value infos is graphsurgeon's export detail; later passes re-infer shapes)."""
    g = model.graph
    return ([n.SerializeToString(deterministic=True) for n in g.node],
            {t.name: t.SerializeToString(deterministic=True) for t in g.initializer},
            [vi.name for vi in g.input], [vi.name for vi in g.output])


@pytest.mark.parametrize("name", list(CASES))
def test_shortcut_gives_what_graphsurgeon_gives(monkeypatch, name):
    model, clean = CASES[name]
    inferred = cleanup.inferred_light(model)
    assert cleanup._already_clean(inferred.graph) is bool(clean)
    shortcut = cleanup.fold_constants(model)
    monkeypatch.setattr(cleanup, "_already_clean", lambda graph: False)
    full = cleanup.fold_constants(model)
    if clean:
        assert _canonical(shortcut) == _canonical(full)
    elif clean is False:  # the round trip ran both times; it had work here
        assert _canonical(model) != _canonical(full)


def test_level_order_is_graphsurgeons():
    model, _ = CASES["branches out of level order"]
    assert [n.op_type for n in cleanup.fold_constants(model).graph.node] == ["Relu", "Sigmoid", "Relu", "Add"]
    assert [n.op_type for n in model.graph.node] == ["Relu", "Relu", "Sigmoid", "Add"]  # input untouched
