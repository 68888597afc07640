"""Insert Q/DQ pairs into a float graph according to a QuantPlan and solved parameters.

One pair per planned tensor, shared by the consumers the plan lists; other consumers and graph outputs
keep reading the float tensor. Names are derived from the tensor name (``<t>_q``, ``<t>_dq``,
``<t>_scale``, ``<t>_zero_point``; a numeric suffix only on collision), so the output is deterministic.
Weights become float -> Q -> DQ (default; TensorRT quantizes them at build) or, with ``dq_only``, an
int8 initializer -> DQ. Biases planned as int32 become an int32 initializer -> DQ. Initializers are
quantized by :func:`onnxq.formats.quantize_as`, the arithmetic of QuantizeLinear: an int8 weight holds
the codes a Q node would compute from the same float weight, on the symmetric grid -127..127.

Control-flow bodies. A pair goes into the scope of the consumers it feeds (one pair per scope when a
tensor is read in several), so the DQ sits next to the node that reads it, as the runtimes' QDQ fusions
need (they work within one graph), and an outer-scope tensor or initializer read in a body is quantized
in that body, by reference. New names are unique across all scopes (``graph.names``).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.formats import int_format, quantize_as
from onnxq.graph.export import export_onnx
from onnxq.graph.names import UniqueNames
from onnxq.graph.query import GraphIndex
from onnxq.graph.scopes import all_nodes, all_tensors, has_bodies, node_scopes
from onnxq.records import QuantParams, QuantPlan, Role, TensorQuantSpec


def insert_qdq(
    model: onnx.ModelProto, plan: QuantPlan, params: dict[str, QuantParams], *, dq_only: bool = False
) -> onnx.ModelProto:
    """Return a new model with Q/DQ inserted for every spec of ``plan``; ``model`` is not modified."""
    graph = gs.import_onnx(model)
    insert_into(graph, plan, params, dq_only=dq_only)
    return export_model(graph, model)


def insert_into(graph: gs.Graph, plan: QuantPlan, params: dict[str, QuantParams], *, dq_only: bool = False) -> None:
    """Insert Q/DQ for every spec of ``plan`` into ``graph`` (changed in place; then cleaned and sorted)."""
    nested = has_bodies(graph)
    index = GraphIndex.build(graph)
    nodes = all_nodes(graph) if nested else {n.name: n for n in graph.nodes}
    tensors = all_tensors(graph) if nested else index.tensors
    scope_of = node_scopes(graph) if nested else {}
    indexes: dict[int, GraphIndex] = {id(graph): index}
    names = UniqueNames.of_graph(graph)
    for spec in plan.specs:
        if spec.key not in params:
            raise KeyError(f"no quantization parameters for {spec.key!r}")
        tensor = tensors.get(spec.tensor)
        if tensor is None:
            raise KeyError(f"planned tensor {spec.tensor!r} is not in the graph")
        p = params[spec.key]
        by_scope: dict[int, tuple[gs.Graph, list[tuple[str, int]]]] = {}
        for node_name, idx in spec.consumers:
            where = scope_of[node_name].graph if node_name in scope_of else graph
            by_scope.setdefault(id(where), (where, []))[1].append((node_name, idx))
        for where, consumers in by_scope.values():
            if spec.role is Role.ACTIVATION:
                dq = _qdq_pair(where, names, tensor, p)
            else:
                if id(where) not in indexes:  # (setdefault would build an index per weight: 50 ms a model)
                    indexes[id(where)] = GraphIndex.build(where)
                scope_index = indexes[id(where)]
                value = _value(tensor, scope_index, index)
                dq = _constant_dq(where, names, value, tensor, spec, p, dq_only or spec.role is Role.BIAS)
            for node_name, idx in consumers:
                nodes[node_name].inputs[idx] = dq
    graph.cleanup(remove_unused_graph_inputs=False).toposort()


def _value(tensor: gs.Tensor, *indexes: GraphIndex) -> np.ndarray | None:
    # A body's weight is an initializer (any scope: graphsurgeon shares outer constants) or a Constant
    # node of that body.
    for index in indexes:
        value = index.constant_value(tensor)
        if value is not None:
            return value
    return None


def export_model(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """``graph`` as a model (types checked), with the model-level fields of ``like`` (the float model)."""
    out = export_onnx(graph, do_type_check=True)
    _copy_model_fields(like, out)
    return out


def _scale_constants(graph: gs.Graph, names: UniqueNames, base: str, p: QuantParams) -> tuple[gs.Constant, gs.Constant]:
    scale = gs.Constant(names.new(f"{base}_scale"), np.asarray(p.scale, dtype=np.float32))
    zero = gs.Constant(names.new(f"{base}_zero_point"), np.asarray(p.zero_point, dtype=int_format(p.dtype).numpy))
    return scale, zero


def _attrs(p: QuantParams) -> dict:
    return {"axis": int(p.axis)} if p.axis is not None and np.ndim(p.scale) == 1 else {}


def _qdq_pair(graph: gs.Graph, names: UniqueNames, tensor: gs.Tensor, p: QuantParams) -> gs.Variable:
    base = tensor.name
    scale, zero = _scale_constants(graph, names, base, p)
    q_out = gs.Variable(names.new(f"{base}_q"), dtype=int_format(p.dtype).numpy, shape=tensor.shape)
    dq_out = gs.Variable(names.new(f"{base}_dq"), dtype=tensor.dtype, shape=tensor.shape)
    graph.nodes.append(gs.Node("QuantizeLinear", names.new(f"{base}_QuantizeLinear"),
                               attrs=_attrs(p), inputs=[tensor, scale, zero], outputs=[q_out]))
    graph.nodes.append(gs.Node("DequantizeLinear", names.new(f"{base}_DequantizeLinear"),
                               attrs=_attrs(p), inputs=[q_out, scale, zero], outputs=[dq_out]))
    return dq_out


def _constant_dq(graph: gs.Graph, names: UniqueNames, value: np.ndarray | None, tensor: gs.Tensor,
                 spec: TensorQuantSpec, p: QuantParams, prequantized: bool) -> gs.Variable:
    if not prequantized:
        # Float weight -> Q -> DQ: TensorRT quantizes at build time with the same scale.
        return _qdq_pair(graph, names, tensor, p)
    base = tensor.name if spec.role is Role.WEIGHT else f"{tensor.name}_bias"
    # int8 weights use the symmetric grid -127..127 (narrow); int32 biases the full one
    q_value = quantize_as(value, p, narrow=spec.role is Role.WEIGHT)
    quant = gs.Constant(names.new(f"{base}_quantized"), q_value)
    scale, zero = _scale_constants(graph, names, base, p)
    dq_out = gs.Variable(names.new(f"{base}_dq"), dtype=value.dtype, shape=list(value.shape))
    graph.nodes.append(gs.Node("DequantizeLinear", names.new(f"{base}_DequantizeLinear"),
                               attrs=_attrs(p), inputs=[quant, scale, zero], outputs=[dq_out]))
    return dq_out


def _copy_model_fields(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    # IR < 4 requires every initializer to be a graph input, which the new scales are not: raise the IR
    # version to the one the opsets need (opset 13 -> 7), which every supported onnxruntime reads.
    needed = onnx.helper.find_min_ir_version_for(list(src.opset_import), ignore_unknown=True)
    dst.ir_version = max(src.ir_version, needed)
    del dst.opset_import[:]
    dst.opset_import.extend(src.opset_import)
    # a domain the rewrite introduced (com.microsoft: rewrite.dynamic, rewrite.recurrent), at version 1
    imported = {o.domain for o in dst.opset_import} | {"ai.onnx"}
    for domain in sorted({n.domain for n in dst.graph.node} - imported):
        dst.opset_import.add(domain=domain, version=1)
    dst.doc_string = src.doc_string
    dst.model_version = src.model_version
    dst.domain = src.domain
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
