"""placement.unrun: nodes reading an activation the data never reached stay float, weights included."""

from __future__ import annotations

import numpy as np

from onnxq.placement.unrun import drop_unrun
from onnxq.records import QuantPlan, Role, Skip, TensorQuantSpec


def _spec(tensor, role, consumers):
    return TensorQuantSpec(tensor, role, "int8", True, tuple(consumers), "weighted-op-input",
                           axis=0 if role is Role.WEIGHT else None)


PLAN = QuantPlan(
    "tensorrt",
    (_spec("x", Role.ACTIVATION, [("conv_a", 0), ("conv_b", 0)]),  # read by a taken and an untaken branch
     _spec("b", Role.ACTIVATION, [("conv_b2", 0)]),  # computed in the untaken branch
     _spec("W", Role.WEIGHT, [("conv_a", 1), ("conv_b2", 1)]),
     _spec("W2", Role.WEIGHT, [("conv_b2", 1)])),
    (Skip("if", "If", "control-flow", "..."),),
    ("conv_a", "conv_b", "conv_b2"),
    values={"W": np.ones(2), "W2": np.ones(2)},
)


def test_nodes_reading_an_unseen_activation_keep_every_input_float():
    out = drop_unrun(PLAN, {"x": 10, "b": 0}, {"conv_b2": "Conv"})
    assert {s.tensor: s.consumers for s in out.specs} == {
        "x": (("conv_a", 0), ("conv_b", 0)), "W": (("conv_a", 1),)}
    assert out.quantized_nodes == ("conv_a", "conv_b")
    assert out.skips[-1] == Skip("conv_b2", "Conv", "not-run", out.skips[-1].reason)
    assert out.values is PLAN.values


def test_a_plan_whose_activations_were_all_seen_is_returned_as_is():
    assert drop_unrun(PLAN, {"x": 1, "b": 3}, {}) is PLAN
    assert drop_unrun(PLAN, {}, {}) is PLAN
