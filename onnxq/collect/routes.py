"""Exposing tensors computed inside control-flow bodies: route each one out through its If/Loop/Scan.

Why. onnxruntime fetches only top-level graph outputs, and a body tensor's values depend on the
iteration or branch that computed them, so a body cannot be run on its own without reproducing the
control flow. Routing keeps the one model and its control flow: each wanted body tensor is copied by an
``Identity`` to a new body output, and from there through the control-flow node's new output into the
enclosing scope, up to a new graph output.

- Loop: a body output beyond the carried values is a scan output: the node stacks it over the
  iterations (one new leading axis).
- Scan: likewise a new scan output (axis 0, forward), stacked over the iterations.
- If: both branches must declare the same outputs, so the other branch outputs an empty tensor of the
  same type and rank; an empty value means the computing branch did not run (nothing to observe).

Nested bodies add one step per level. :func:`unpack` turns what onnxruntime returns into the body
tensor's values over every execution: the stacked iteration axes merge into the leading (batch) axis,
so per-channel axes keep their place. Limits: the iterations of a Loop or Scan must give the routed
tensor one shape (onnxruntime stacks them), which also excludes a tensor of an If branch inside a Loop
whose branch changes between iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxq.graph.names import UniqueNames

_STACKING = frozenset({"Loop", "Scan"})
_BRANCHES = ("then_branch", "else_branch")


@dataclass(frozen=True)
class Route:
    """How body tensor ``tensor`` reaches graph output ``output``: ``stacked`` iteration axes lead its
    value (Loop/Scan levels); ``conditional`` when an If branch is on the way (empty: it did not run)."""

    tensor: str
    output: str
    stacked: int = 0
    conditional: bool = False


@dataclass(frozen=True)
class _Where:
    graph: onnx.GraphProto
    chain: tuple[tuple[onnx.NodeProto, str, onnx.GraphProto], ...]  # (node, attr, enclosing graph), outer first


def body_tensors(model: onnx.ModelProto) -> dict[str, _Where]:
    """The tensors defined inside a body (inputs, initializers, node outputs of a subgraph), nested too."""
    out: dict[str, _Where] = {}

    def visit(graph: onnx.GraphProto, chain: tuple) -> None:
        if chain:
            names = [v.name for v in graph.input] + [t.name for t in graph.initializer]
            names += [o for node in graph.node for o in node.output]
            for name in names:
                if name:
                    out.setdefault(name, _Where(graph, chain))
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g, (*chain, (node, attr.name, graph)))

    visit(model.graph, ())
    return out


def route(model: onnx.ModelProto, tensors: list[str]) -> tuple[onnx.ModelProto, dict[str, Route]]:
    """A copy of ``model`` with each body tensor among ``tensors`` routed out to a new graph output, and
    the routes by tensor name. Top-level tensors are left to the caller (they are outputs as they are)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    where = body_tensors(out)
    wanted = [t for t in dict.fromkeys(tensors) if t in where]
    if not wanted:
        return out, {}
    names = UniqueNames.of_proto(out.graph)
    routes = {}
    for tensor in wanted:
        routes[tensor] = _route_one(out, where[tensor], tensor, names)
    return out, routes


def _route_one(model: onnx.ModelProto, where: _Where, tensor: str, names: UniqueNames) -> Route:
    info = _type_of(where.graph, tensor)
    current, graph, stacked, conditional = tensor, where.graph, 0, False
    for node, attr, parent in reversed(where.chain):
        carried = names.new(f"{tensor}_onnxq_route")
        graph.node.append(helper.make_node("Identity", [current], [carried], name=names.new(f"{carried}_Identity")))
        graph.output.append(_value_info(carried, info, stacked))
        if node.op_type in _STACKING:
            if node.op_type == "Scan":
                _extend_ints(node, "scan_output_axes", 0)
                _extend_ints(node, "scan_output_directions", 0)
            stacked += 1
        elif node.op_type == "If":
            other = next(a.g for a in node.attribute if a.name in _BRANCHES and a.name != attr)
            _add_placeholder(other, names, info, stacked)
            conditional = True
        else:
            raise ValueError(f"cannot route {tensor!r} out of a {node.op_type} body")
        current = names.new(f"{tensor}_onnxq_out")
        node.output.append(current)
        graph = parent
    model.graph.output.append(_value_info(current, info, stacked))
    return Route(tensor, current, stacked, conditional)


def unpack(value: np.ndarray, route: Route | None) -> np.ndarray:
    """The body tensor's values in ``value`` (what onnxruntime returned for ``route.output``): iteration
    axes merged into the leading axis (a vector per iteration comes out as ``[iterations, K]``: its own
    axis stays last, as a MatMul's input moments need); empty when an If branch on the way did not run."""
    if route is None or route.stacked == 0:
        return value
    value = np.asarray(value)
    if value.ndim > route.stacked + 1:
        return value.reshape((-1, *value.shape[route.stacked + 1:]))
    if value.ndim == route.stacked + 1:  # a vector per iteration: iterations become its leading axis
        return value.reshape((-1, value.shape[-1]))
    return value.reshape(-1)


def _type_of(graph: onnx.GraphProto, tensor: str) -> tuple[int, int | None]:
    """(element type, rank) recorded for ``tensor`` in ``graph``; float and unknown rank by default
    (placement plans only float tensors of known type)."""
    for vi in [*graph.value_info, *graph.input, *graph.output]:
        if vi.name == tensor and vi.type.HasField("tensor_type"):
            tt = vi.type.tensor_type
            return tt.elem_type or onnx.TensorProto.FLOAT, len(tt.shape.dim) if tt.HasField("shape") else None
    for init in graph.initializer:
        if init.name == tensor:
            return init.data_type, len(init.dims)
    return onnx.TensorProto.FLOAT, None


def _value_info(name: str, info: tuple[int, int | None], stacked: int) -> onnx.ValueInfoProto:
    # The element type only: iteration counts and branch shapes are the runtime's to work out.
    return helper.make_tensor_value_info(name, info[0], None)


def _add_placeholder(branch: onnx.GraphProto, names: UniqueNames, info: tuple[int, int | None],
                     stacked: int) -> None:
    elem, rank = info
    rank = 1 if rank is None else rank + stacked
    name = names.new("onnxq_route_placeholder")
    empty = np.zeros((0,) * max(rank, 1), dtype=helper.tensor_dtype_to_np_dtype(elem))
    branch.node.append(helper.make_node("Constant", [], [name], name=names.new(f"{name}_Constant"),
                                        value=numpy_helper.from_array(empty, name)))
    branch.output.append(helper.make_tensor_value_info(name, elem, None))


def _extend_ints(node: onnx.NodeProto, attr: str, value: int) -> None:
    for a in node.attribute:
        if a.name == attr:
            a.ints.append(value)
            return
