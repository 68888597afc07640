"""Placement: decide, on the float graph, which tensors get Q/DQ and why (a QuantPlan).

Each rule returns proposals (``proposals``); ``resolve`` merges them in the target's rule order with
one stated precedence; the targets are data (``targets``).
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import onnx
import onnx_graphsurgeon as gs

from onnxq.config import QuantConfig, Target
from onnxq.graph.query import GraphIndex
from onnxq.placement.ignore import excluded_nodes
from onnxq.placement.proposals import Context
from onnxq.placement.resolve import resolve
from onnxq.placement.targets import ORT_CPU, TENSORRT, TargetSpec
from onnxq.records import QuantPlan

__all__ = ["ORT_CPU", "TENSORRT", "TargetSpec", "plan"]


def plan(model: onnx.ModelProto | gs.Graph | GraphIndex, config: QuantConfig | None = None) -> QuantPlan:
    """Compute the QuantPlan of a preprocessed float model for ``config.target``.

    User exclusions are computed first and every rule respects them, so they always win. The plan
    carries the values of the weights it quantizes (``QuantPlan.values``), read from the graph.
    """
    config = config or QuantConfig()
    if isinstance(model, GraphIndex):
        index = model
    else:
        index = GraphIndex.build(model if isinstance(model, gs.Graph) else gs.import_onnx(model))
    graph = index.graph
    target = TENSORRT if config.target is Target.TENSORRT else ORT_CPU
    context = Context(
        index=index,
        target=target,
        weights=config.weights,
        excluded=MappingProxyType(excluded_nodes(graph, config.exclude_nodes, config.exclude_ops)),
    )
    built = resolve(context, target.rules)
    values = {s.tensor: index.constant_value(index.tensors[s.tensor]) for s in built.weights()}
    return dataclasses.replace(built, values=values)
