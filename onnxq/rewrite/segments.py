"""Cut a gated model into consecutive segments, so an evaluation can start in the middle of the graph.

Why: with only unit ``u`` quantized (one at a time), everything before ``u`` computes exactly what the
float model computes; with every unit but ``u`` quantized (leave one out), everything before ``u``
computes what the fully quantized model computes. Both prefixes are shared by many configurations, so
the evaluator caches the tensors alive at each cut for those two base configurations and runs only the
segments from ``u``'s cut on. On EfficientNet-Lite0 (profiled per node), 8 segments cut at equal unit
counts leave 53 % of the per-configuration work (an ideal cut before every unit: 47 %).

Segment ``j`` holds the outer-graph nodes from cut ``j`` to cut ``j + 1`` (topological order), except
nodes that read only the gates input and constants (the ``Gather`` of each gate), which go to the segment
of their first consumer. Its inputs are the tensors it reads (explicitly, or from inside an ``If`` branch)
that earlier segments or the graph inputs produce; its outputs are the tensors it produces that later
segments read or that are graph outputs. ``live_after`` is what must be kept after it ran: inputs of
later segments and graph outputs already produced. Running the segments in order on the same feeds gives
the whole model's outputs, value for value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx
from onnx import helper

from onnxq.rewrite.gates import GatedModel


@dataclass(frozen=True)
class GatedSegment:
    model: onnx.ModelProto
    inputs: tuple[str, ...]  # data inputs (graph inputs or tensors of earlier segments), not the gates
    outputs: tuple[str, ...]
    live_after: tuple[str, ...]
    first_unit: int  # index in GatedModel.units of the first unit whose If lies in this segment
    uses_gates: bool


def _subgraph_uses(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes (recursively)."""
    produced = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    produced |= {i.name for i in graph.input}
    used: set[str] = set()
    for node in graph.node:
        used |= set(node.input) | _attr_uses(node)
    return {u for u in used if u and u not in produced}


def _attr_uses(node: onnx.NodeProto) -> set[str]:
    out: set[str] = set()
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out |= _subgraph_uses(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for g in attr.graphs:
                out |= _subgraph_uses(g)
    return out


def _uses(node: onnx.NodeProto) -> set[str]:
    return {i for i in node.input if i} | _attr_uses(node)


def cut_points(gated: GatedModel, segments: int) -> list[int]:
    """Unit indices where segments 1.. start: equal numbers of units per segment."""
    k = len(gated.units)
    segments = max(1, min(segments, k))
    return sorted({int(i * k / segments) for i in range(1, segments)} - {0})


def split_gated(gated: GatedModel, segments: int) -> tuple[GatedSegment, ...]:
    """The gated model as ``segments`` consecutive models (fewer when there are fewer units)."""
    graph = gated.model.graph
    nodes = list(graph.node)
    position = {n.name: i for i, n in enumerate(nodes)}
    # a cut before unit u must leave every earlier unit before it and every later one after it; units
    # inside one body share their top-level node (gates.GatedModel.if_nodes), so no cut falls between them
    where = [position[name] for name in gated.if_nodes]
    unit_cuts = [u for u in cut_points(gated, segments)
                 if max(where[:u], default=-1) < where[u] <= min(where[u:])]
    starts = [0] + [where[u] for u in unit_cuts]
    seg_of = [sum(1 for s in starts[1:] if s <= i) for i in range(len(nodes))]
    constants = {t.name for t in graph.initializer}
    uses = [_uses(n) for n in nodes]
    _move_gate_readers(nodes, uses, seg_of, constants | {gated.gates_input})
    graph_inputs = [i.name for i in graph.input if i.name not in constants and i.name != gated.gates_input]
    graph_outputs = [o.name for o in graph.output]
    types = {v.name: v for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    count = len(starts)
    produced_by = {o: seg_of[i] for i, n in enumerate(nodes) for o in n.output}
    for name in graph_inputs:
        produced_by[name] = -1
    last_use: dict[str, int] = {}
    for i, used in enumerate(uses):
        for name in used:
            last_use[name] = max(last_use.get(name, -1), seg_of[i])
    for name in graph_outputs:
        last_use[name] = count  # kept to the end
    out = []
    for j in range(count):
        members = [n for i, n in enumerate(nodes) if seg_of[i] == j]
        read = set().union(*(uses[i] for i in range(len(nodes)) if seg_of[i] == j)) if members else set()
        inputs = sorted(t for t in read if produced_by.get(t, j) < j)
        made = [o for n in members for o in n.output if o]
        outputs = [t for t in made if last_use.get(t, -1) > j]
        live = sorted(t for t, p in produced_by.items() if p <= j and last_use.get(t, -1) > j)
        first = 0 if j == 0 else unit_cuts[j - 1]
        model = _segment_model(gated, members, inputs, outputs, read, types, j)
        out.append(GatedSegment(model, tuple(inputs), tuple(outputs), tuple(live), first, gated.gates_input in read))
    return tuple(out)


def _move_gate_readers(nodes, uses, seg_of, sources: set[str]) -> None:
    """Nodes reading only the gates and constants run in the segment of their first consumer."""
    consumers: dict[str, list[int]] = {}
    for i, used in enumerate(uses):
        for name in used:
            consumers.setdefault(name, []).append(i)
    for i, node in enumerate(nodes):
        if uses[i] and uses[i] <= sources:
            users = [seg_of[c] for o in node.output for c in consumers.get(o, [])]
            if users:
                seg_of[i] = min(users)


def _value_info(name: str, types: dict[str, onnx.ValueInfoProto]) -> onnx.ValueInfoProto:
    if name not in types:
        raise ValueError(f"no type known for tensor {name!r}: run shape inference on the gated model first")
    return types[name]


def _segment_model(gated: GatedModel, members: list[onnx.NodeProto], inputs: Iterable[str],
                   outputs: Iterable[str], read: set[str], types: dict, j: int) -> onnx.ModelProto:
    graph = gated.model.graph
    feeds = list(inputs) + ([gated.gates_input] if gated.gates_input in read else [])
    inits = [t for t in graph.initializer if t.name in read]
    seg = helper.make_graph(members, f"{graph.name}_segment{j}", [_value_info(n, types) for n in feeds],
                            [_value_info(n, types) for n in outputs], inits)
    model = helper.make_model(seg, opset_imports=list(gated.model.opset_import))
    model.ir_version = gated.model.ir_version
    return model
