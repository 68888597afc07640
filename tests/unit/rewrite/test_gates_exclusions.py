"""The gated model (sensitivity, --auto-fallback) with user exclusions, on both targets.

On ORT-CPU a quantized node's output is quantized for every reader, so a node the user excludes still
reads Q/DQ edges: it is not a unit of the gated model but has planned edges. Those edges used to crash
``build_gated`` (a slice assignment onto an onnx-graphsurgeon input list) and, once built, must follow
the gate of the unit that produces them, so that every gate off is the float model and every gate on is
``insert_qdq`` of the same plan.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from helpers import ort_run

import onnxq
from onnxq import api
from onnxq.collect import data
from onnxq.config import QuantConfig
from onnxq.graph.query import GraphIndex
from onnxq.records import QuantPlan
from onnxq.rewrite import insert_qdq
from onnxq.rewrite.gates import QuantForm, build_gated
from onnxq.testing import model_from_text

# Conv+Relu, a residual Add, Concat, GlobalAveragePool, Flatten and Gemm: every op type of the issue's
# exclude lists, each reading tensors that quantized neighbours produce.
NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,5] y) {
  c = Conv <pads=[1,1,1,1]> (x, W, B)
  r = Relu (c)
  d = Conv <pads=[1,1,1,1]> (r, W2, B2)
  e = Conv <pads=[1,1,1,1]> (r, W3, B3)
  a = Add (d, r)
  k = Concat <axis=1> (a, e)
  p = GlobalAveragePool (k)
  f = Flatten (p)
  y = Gemm <transB=1> (f, Wg, Bg)
}
"""
WEIGHTS = {"W": (4, 3, 3, 3), "B": (4,), "W2": (4, 4, 3, 3), "B2": (4,), "W3": (4, 4, 3, 3), "B3": (4,),
           "Wg": (5, 8), "Bg": (5,)}
EXCLUSIONS = [
    {"exclude_ops": ["Add"]},
    {"exclude_ops": ["Gemm"]},
    {"exclude_ops": ["GlobalAveragePool"]},
    {"exclude_ops": ["Concat"]},
    {"exclude_ops": ["Add", "Gemm", "GlobalAveragePool", "Concat"]},
    {"exclude_nodes": ["^Conv_1$"]},
    {},
]


def _run(model, feed):
    # A constant Gemm weight is pre-packed, a dequantized one is not: the sums then differ in the last
    # bit. Without pre-packing both run the same kernel, so the comparisons can be exact.
    return ort_run(model, feed, prepack=False)


def _restrict(pre, plan: QuantPlan, on: set[str], units: tuple[str, ...]) -> QuantPlan:
    """The plan as the gated model runs it with the units ``on`` quantized, written independently: an
    edge into a unit follows that unit; an edge into any other node follows the unit producing its
    tensor (always on when no unit produces it)."""
    producer = GraphIndex.build(gs.import_onnx(pre)).producer
    specs = []
    for s in plan.specs:
        def kept(node: str) -> bool:
            if node in units:
                return node in on
            owner = producer.get(s.tensor)
            return owner is None or owner.name not in units or owner.name in on
        consumers = tuple(c for c in s.consumers if kept(c[0]))
        if consumers:
            specs.append(dataclasses.replace(s, consumers=consumers))
    quantized = tuple(u for u in plan.quantized_nodes if u in on)
    return QuantPlan(plan.target, tuple(specs), plan.skips, quantized)


@pytest.mark.parametrize("target", ["ort-cpu", "tensorrt"])
@pytest.mark.parametrize("exclusion", EXCLUSIONS, ids=lambda e: "+".join(sum(e.values(), [])) or "none")
def test_gated_model_with_exclusions_equals_insert_qdq_and_float(target, exclusion):
    config = QuantConfig.from_dict({"target": target, "activations": {"method": "minmax"}, **exclusion})
    pre, _ = api.prepare(model_from_text(NET, weights=WEIGHTS))
    qplan = onnxq.plan(pre, config)
    excluded = {s.node for s in qplan.skips if s.rule == "user-exclude"}
    assert excluded or not exclusion or target == "tensorrt"  # TensorRT never quantizes Concat or pooling
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    stats, _ = onnxq.collect(pre, qplan, data.from_iterable(feeds), config)
    params = onnxq.solve(stats, qplan, config)
    dq_only = target == "ort-cpu"
    gated = build_gated(pre, qplan, params, form=QuantForm(dq_only=dq_only))
    assert not excluded & set(gated.units)
    feed = feeds[0]

    every = _run(gated.model, {**feed, **gated.feed(gated.units)})[0]
    np.testing.assert_array_equal(every, _run(insert_qdq(pre, qplan, params, dq_only=dq_only), feed)[0])
    np.testing.assert_array_equal(_run(gated.model, {**feed, **gated.feed(())})[0], _run(pre, feed)[0])

    units = gated.units
    for subset in [(u,) for u in units] + [tuple(v for v in units if v != u) for u in units]:
        reference = insert_qdq(pre, _restrict(pre, qplan, set(subset), units), params, dq_only=dq_only)
        got = _run(gated.model, {**feed, **gated.feed(subset)})[0]
        np.testing.assert_array_equal(got, _run(reference, feed)[0], err_msg=f"subset {subset}")


def test_excluded_reader_of_a_quantized_output_is_switched_by_its_producer():
    """ORT-CPU, Add excluded: the Add reads the second Conv's quantized output; that edge is on exactly
    when the Conv's gate is (the case that crashed with "'list' object has no attribute 'outputs'")."""
    config = QuantConfig.from_dict({"target": "ort-cpu", "activations": {"method": "minmax"}, "exclude_ops": ["Add"]})
    pre, _ = api.prepare(model_from_text(NET, weights=WEIGHTS))
    qplan = onnxq.plan(pre, config)
    add = next(s.node for s in qplan.skips if s.rule == "user-exclude")
    index = GraphIndex.build(gs.import_onnx(pre))
    into_add = [s for s in qplan.activations() if any(c[0] == add for c in s.consumers)]
    assert into_add and all(index.producer[s.tensor].name in qplan.quantized_nodes for s in into_add)
    feeds = [{"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}]
    params = onnxq.solve(onnxq.collect(pre, qplan, data.from_iterable(feeds), config)[0], qplan, config)
    gated = build_gated(pre, qplan, params, form=QuantForm(dq_only=True))
    ifs = [n for n in gated.model.graph.node if n.op_type == "If"]
    assert len(ifs) == len(gated.units) + len({s.tensor for s in into_add})
