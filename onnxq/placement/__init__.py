"""Placement: decide, on the float graph, which tensors get Q/DQ and why (a QuantPlan).

Each rule returns proposals (``proposals``); ``resolve`` merges them in the target's rule order with
one stated precedence; the targets are data (``targets``).

Control flow. The rules run on each scope (the top level, then every If/Loop/Scan body, nested too:
``graph.scopes``) as on a graph of its own, so they apply in bodies exactly as at top level; the
scopes' plans are merged (specs of one tensor, role and axis from several scopes unite their consumers).
A body's outer-scope references are the enclosing graph's tensors: an outer initializer read by a body
Conv is that Conv's weight, quantized per channel like any other.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import onnx
import onnx_graphsurgeon as gs

from onnxq.config import QuantConfig, Target
from onnxq.graph.query import GraphIndex
from onnxq.graph.scopes import walk
from onnxq.placement.ignore import excluded_nodes
from onnxq.placement.proposals import Context
from onnxq.placement.resolve import resolve
from onnxq.placement.targets import ORT_CPU, TENSORRT, TargetSpec
from onnxq.records import QuantPlan, TensorQuantSpec

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
    target = TENSORRT if config.target is Target.TENSORRT else ORT_CPU
    plans, values = [], {}
    for scope in walk(index.graph):
        scope_index = index if scope.owner is None else GraphIndex.build(scope.graph)
        context = Context(
            index=scope_index,
            target=target,
            weights=config.weights,
            excluded=MappingProxyType(excluded_nodes(scope.graph, config.exclude_nodes, config.exclude_ops)),
        )
        built = resolve(context, target.rules)
        plans.append(built)
        for s in built.weights():
            values.setdefault(s.tensor, scope_index.constant_value(scope_index.tensors[s.tensor]))
    merged = plans[0] if len(plans) == 1 else merge_plans(plans)
    return dataclasses.replace(merged, values=values)


def merge_plans(plans: list[QuantPlan]) -> QuantPlan:
    """One plan from the plans of several scopes, in order: specs of one (tensor, role, axis) merge into
    the first, with the consumers of all; skips and quantized nodes are concatenated (node names are
    unique model-wide)."""
    specs: dict[tuple, TensorQuantSpec] = {}
    for p in plans:
        for s in p.specs:
            key = (s.tensor, s.role, s.axis)
            first = specs.get(key)
            if first is None:
                specs[key] = s
            else:
                extra = tuple(c for c in s.consumers if c not in first.consumers)
                specs[key] = dataclasses.replace(first, consumers=first.consumers + extra,
                                                 group=first.group or s.group)
    return QuantPlan(
        plans[0].target,
        tuple(specs.values()),
        tuple(k for p in plans for k in p.skips),
        tuple(n for p in plans for n in p.quantized_nodes),
    )
