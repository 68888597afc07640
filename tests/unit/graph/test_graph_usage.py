"""No pass leaves dead initializers: onnxruntime drops them while resolving a graph and then cannot take
them in memory (onnxq.runtime hands big initializers over as arrays), so a dead weight over 1 KB made
every session on the graph fail. Checked here for every graph onnxq builds, with weights over 1 KB."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MINMAX, random_feeds
from onnx import TensorProto, helper, numpy_helper

import onnxq
from onnxq import api
from onnxq.collect.python_sources import from_iterable
from onnxq.config import QuantConfig, Target
from onnxq.graph.usage import drop_unread, read_names, unused_initializers
from onnxq.rewrite.gates import build_gated
from onnxq.rewrite.segments import split_gated
from onnxq.testing import model_from_text

C = 64
# A zero Pad folded into the first Conv (its pads and value become dead), a bias-less Conv (bias
# correction adds one), channel ranges 0.02 .. 20 before a 64-channel depthwise conv (equalized, 2.3 KB).
NET = f"""
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,{C},8,8] y) {{
  p = Pad (x, pads, zero)
  a = Conv (p, W0)
  s = Relu (a)
  y = Conv <group={C}, pads=[1,1,1,1]> (s, W1, B1)
}}
"""


def net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((C, 3, 3, 3)).astype(np.float32)
    w0 *= np.logspace(-3, 0, C, dtype=np.float32)[:, None, None, None] * 20
    return model_from_text(NET, weights={"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                         "zero": np.array(0, np.float32), "W0": w0, "W1": (C, 1, 3, 3),
                                         "B1": (C,)})


def feeds(n: int) -> list[dict[str, np.ndarray]]:
    return random_feeds((1, 3, 8, 8), n, seed=1)


def test_read_names_sees_subgraphs_and_outputs() -> None:
    branch = helper.make_graph([helper.make_node("Add", ["x", "V"], ["t"])], "b", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in (("x", TensorProto.FLOAT, [2]),
                                                               ("c", TensorProto.BOOL, []))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("y", "O")],
        [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("V", "O", "U")])
    model = helper.make_model(graph)
    assert {"c", "x", "V", "y", "O"} <= read_names(graph) and "U" not in read_names(graph)
    assert unused_initializers(model) == ["U"]


def test_drop_unread_removes_only_dead_candidates_and_their_input_entries() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "A"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "A", "B", "D")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("A", "B", "D")])
    assert drop_unread(graph, {"A", "B"}) == ["B"]  # A is read; D is dead but not this pass's doing
    assert [t.name for t in graph.initializer] == ["A", "D"]
    assert [i.name for i in graph.input] == ["x", "A", "D"]


def test_preprocess_leaves_no_dead_initializers() -> None:
    pre, notes = api.prepare(net())
    assert any("Pad" in note for note in notes)
    assert unused_initializers(pre) == []  # the folded Pad's pads and value were left behind


@pytest.mark.parametrize("target", [Target.TENSORRT, Target.ORT_CPU])
def test_quantized_equalized_and_gated_graphs_leave_no_dead_initializers(target: Target) -> None:
    model, data = net(), feeds(8)
    config = QuantConfig(activations=MINMAX, target=target, equalize=target is Target.TENSORRT)
    pre, _ = api.prepare(model)
    eq = api.equalized(pre, config, from_iterable(data))
    assert unused_initializers(eq) == []
    result = api.quantize(model, data, config)  # insert_qdq after bias correction (on by default)
    assert unused_initializers(result.model) == []
    qplan = onnxq.plan(eq, config)
    stats, _ = onnxq.collect(eq, qplan, from_iterable(data), config)
    gated = build_gated(eq, qplan, onnxq.solve(stats, qplan, config))
    assert unused_initializers(gated.model) == []
    assert all(unused_initializers(s.model) == [] for s in split_gated(gated, 2))
