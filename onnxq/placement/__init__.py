"""Placement: decide, on the float graph, which tensors get Q/DQ and why (a QuantPlan)."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from onnxq.config import QuantConfig, Target
from onnxq.graph.query import GraphIndex
from onnxq.placement.ignore import excluded_nodes
from onnxq.placement.ort_rules import (
    rule_float_consumers,
    rule_integer_derived,
    rule_normalization_inputs,
    rule_output_tail,
)
from onnxq.placement.rules import (
    PlanBuilder,
    rule_op_inputs_outputs,
    rule_residual_add,
    rule_shared_scales,
    rule_unsupported_nodes,
    rule_weighted_inputs,
)
from onnxq.placement.targets import ORT_CPU, TENSORRT, TargetSpec
from onnxq.records import QuantPlan

__all__ = ["plan", "TargetSpec", "TENSORRT", "ORT_CPU"]

RULES = {
    Target.TENSORRT: (rule_unsupported_nodes, rule_weighted_inputs, rule_residual_add, rule_shared_scales),
    Target.ORT_CPU: (rule_unsupported_nodes, rule_integer_derived, rule_output_tail, rule_normalization_inputs,
                     rule_float_consumers, rule_weighted_inputs, rule_op_inputs_outputs, rule_shared_scales),
}


def plan(model: onnx.ModelProto | gs.Graph, config: QuantConfig | None = None) -> QuantPlan:
    """Compute the QuantPlan of a preprocessed float model for ``config.target``.

    User exclusions are computed first and every rule respects them, so they always win.
    """
    config = config or QuantConfig()
    graph = model if isinstance(model, gs.Graph) else gs.import_onnx(model)
    target = TENSORRT if config.target is Target.TENSORRT else ORT_CPU
    index = GraphIndex.build(graph)
    builder = PlanBuilder(
        index=index,
        target=target,
        weights=config.weights,
        excluded=excluded_nodes(graph, config.exclude_nodes, config.exclude_ops),
    )
    for rule in RULES[config.target]:
        rule(builder)
    return builder.build()
