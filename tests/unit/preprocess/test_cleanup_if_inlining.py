"""Constant folding must never leave a node reading a tensor nothing produces.

graphsurgeon (0.6.1) inlines an If whose condition its Shape folding made constant, and drops producers of
the inlined branch's outputs when the branch holds a nested If (Silero VAD's op15 and half exports: onnxq
refused them, "Nodes in a graph must be topologically sorted"). ``cleanup.fold_constants`` checks the result
and folds again without shapes, which keeps such conditions dynamic.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from onnxq.preprocess import cleanup
from onnxq.preprocess.shapes import inferred_light

SHAPE = [2, "n", 4]


def _vi(name, shape=SHAPE):
    return helper.make_tensor_value_info(name, TP.FLOAT, shape)


def _model() -> onnx.ModelProto:
    """If(Shape(X)[0] == 2) -- statically true -- whose then-branch computes its outputs through a nested If."""
    inner_then = helper.make_graph([helper.make_node("Mul", ["X", "two"], ["a"], name="in_mul")], "it", [], [_vi("a")])
    inner_else = helper.make_graph([helper.make_node("Neg", ["X"], ["b"], name="in_neg")], "ie", [], [_vi("b")])
    then = helper.make_graph(
        [helper.make_node("ReduceSum", ["X"], ["s"], name="rs", keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["c2"], name="gt"),
         helper.make_node("If", ["c2"], ["t1"], name="inner_if", then_branch=inner_then, else_branch=inner_else),
         helper.make_node("Relu", ["t1"], ["t2"], name="relu")],
        "then", [], [_vi("t1"), _vi("t2")])
    other = helper.make_graph([helper.make_node("Identity", ["X"], ["e1"], name="e_id"),
                               helper.make_node("Abs", ["X"], ["e2"], name="e_abs")], "else", [], [_vi("e1"), _vi("e2")])
    nodes = [helper.make_node("Shape", ["X"], ["sh"], name="shape"),
             helper.make_node("Gather", ["sh", "i0"], ["d0"], name="gather", axis=0),
             helper.make_node("Equal", ["d0", "two_i"], ["c"], name="eq"),
             helper.make_node("If", ["c"], ["y1", "y2"], name="outer_if", then_branch=then, else_branch=other),
             helper.make_node("Unsqueeze", ["y2", "ax"], ["u"], name="unsq"),
             helper.make_node("Add", ["u", "y1"], ["out"], name="add")]
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(2, np.int64), "two_i"),
             numpy_helper.from_array(np.array([0], np.int64), "ax")]
    graph = helper.make_graph(nodes, "g", [_vi("X")], [_vi("out", [1, *SHAPE])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_graphsurgeons_if_inlining_breaks_this_graph():
    """The premise: with shapes folded, graphsurgeon's round trip leaves a dangling reference (if a later
    graphsurgeon fixes it, this test says so and the retry below is no longer needed)."""
    model = _model()
    folded = cleanup._round_trip(model, inferred_light(model), cleanup._never_fold)
    assert cleanup._well_formed(model.graph) and not cleanup._well_formed(folded.graph)


def test_folding_keeps_the_graph_well_formed_and_the_function_the_same():
    model = _model()
    out = cleanup.fold_constants(model)
    assert cleanup._well_formed(out.graph)
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    np.testing.assert_array_equal(run(out)[0], run(model)[0])


def test_well_formed_sees_dangling_names_in_bodies_and_outputs():
    model = _model()
    assert cleanup._well_formed(model.graph)
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    inner = next(a.g for a in broken.graph.node[3].attribute if a.name == "then_branch")
    inner.node[3].input[0] = "nowhere"
    assert not cleanup._well_formed(broken.graph)
    broken.CopyFrom(model)
    broken.graph.output[0].name = "missing"
    assert not cleanup._well_formed(broken.graph)
