"""Insert Q/DQ pairs into a float graph according to a QuantPlan and solved parameters.

One pair per planned tensor, shared by the consumers the plan lists; other consumers and graph outputs
keep reading the float tensor. Names are derived from the tensor name (``<t>_q``, ``<t>_dq``,
``<t>_scale``, ``<t>_zero_point``; a numeric suffix only on collision), so the output is deterministic.
Weights become float -> Q -> DQ (default; TensorRT quantizes them at build) or, with ``dq_only``, an
int8 initializer -> DQ. Biases planned as int32 become an int32 initializer -> DQ. Initializers are
quantized by :func:`onnxq.formats.quantize_as`, the arithmetic of QuantizeLinear: an int8 weight holds
the codes a Q node would compute from the same float weight, on the symmetric grid -127..127.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.formats import int_format, quantize_as
from onnxq.graph.export import export_onnx
from onnxq.graph.names import UniqueNames
from onnxq.graph.query import GraphIndex
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
    index = GraphIndex.build(graph)
    nodes = {n.name: n for n in graph.nodes}
    names = UniqueNames.of_graph(graph)
    for spec in plan.specs:
        if spec.key not in params:
            raise KeyError(f"no quantization parameters for {spec.key!r}")
        tensor = index.tensors.get(spec.tensor)
        if tensor is None:
            raise KeyError(f"planned tensor {spec.tensor!r} is not in the graph")
        p = params[spec.key]
        if spec.role is Role.ACTIVATION:
            dq = _qdq_pair(graph, names, tensor, p)
        else:
            dq = _constant_dq(graph, names, index, tensor, spec, p, dq_only or spec.role is Role.BIAS)
        for node_name, idx in spec.consumers:
            nodes[node_name].inputs[idx] = dq
    graph.cleanup(remove_unused_graph_inputs=False).toposort()


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


def _constant_dq(graph: gs.Graph, names: UniqueNames, index: GraphIndex, tensor: gs.Tensor,
                 spec: TensorQuantSpec, p: QuantParams, prequantized: bool) -> gs.Variable:
    value = index.constant_value(tensor)
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
    dst.doc_string = src.doc_string
    dst.model_version = src.model_version
    dst.domain = src.domain
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
