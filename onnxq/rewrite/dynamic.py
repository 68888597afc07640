"""Write the dynamic plan (placement.dynamic): MatMul/Gemm -> DynamicQuantizeMatMul, LSTM ->
DynamicQuantizeLSTM (rewrite.recurrent), in place on the one graph of the run.

``com.microsoft.DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias)`` computes
``Y = (quantize_uint8(A) - a_zp) @ (B - b_zp) * a_scale * b_scale + bias``, with A's scale and zero
point from A's range in each run (the formula of DynamicQuantizeLinear) and ``b_scale`` a scalar or
one per output column. A Gemm becomes one with ``alpha`` folded into the weights and ``beta * C`` into
the bias; a bias Add after a MatMul (its only consumer, a constant ``[N]`` operand) is folded in, so
the kernel adds it in its output loop.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxq.config import WeightSpec
from onnxq.graph.names import UniqueNames
from onnxq.graph.query import GraphIndex
from onnxq.placement.dynamic import DYNAMIC_MATMUL
from onnxq.placement.recurrent import DYNAMIC_LSTM
from onnxq.records.kernels import KernelChoice
from onnxq.rewrite.recurrent import CONTRIB_DOMAIN, symmetric_int8, to_dynamic_lstm


def _gemm_operands(index: GraphIndex, node: gs.Node) -> tuple[np.ndarray, np.ndarray | None]:
    """Gemm's B as [K, N] with alpha folded in, and ``beta * C`` as a [N] bias (None without C)."""
    b = index.constant_value(node.inputs[1]).astype(np.float32)
    if node.attrs.get("transB", 0):
        b = b.T
    b = b * np.float32(node.attrs.get("alpha", 1.0))
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = index.constant_value(node.inputs[2]).astype(np.float32).reshape(-1)
        bias = np.broadcast_to(c * np.float32(node.attrs.get("beta", 1.0)), (b.shape[1],)).copy()
    return np.ascontiguousarray(b), bias


def _bias_add(index: GraphIndex, node: gs.Node, n: int) -> tuple[gs.Node, np.ndarray] | None:
    """The Add after MatMul ``node`` that adds a constant [N] vector, with that vector; else None."""
    out = node.outputs[0]
    consumers = index.consumers.get(out.name, [])
    if len(consumers) != 1 or out in index.graph.outputs:
        return None
    add = consumers[0][0]
    if add.op != "Add" or len(add.inputs) != 2:
        return None
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    value = index.constant_value(other)
    if value is None or value.dtype != np.float32 or value.shape != (n,):
        return None
    return add, value


def _to_dynamic_matmul(graph: gs.Graph, index: GraphIndex, node: gs.Node, names: UniqueNames, spec: WeightSpec,
                       qmax: int) -> None:
    if node.op == "Gemm":
        b, bias = _gemm_operands(index, node)
    else:
        b, bias = index.constant_value(node.inputs[1]).astype(np.float32), None
    out = node.outputs[0]
    fused = _bias_add(index, node, b.shape[1]) if bias is None else None
    if fused is not None:
        add, bias = fused
        out = add.outputs[0]
        add.outputs.clear()  # the MatMul's kernel now produces the Add's output; cleanup drops the Add
    codes, scale = symmetric_int8(b, 1 if spec.per_channel else None, spec, qmax)
    base = node.inputs[1].name
    inputs = [node.inputs[0], gs.Constant(names.new(f"{base}_quantized"), codes),
              gs.Constant(names.new(f"{base}_scale"), scale),
              gs.Constant(names.new(f"{base}_zero_point"), np.zeros(scale.shape, np.int8))]
    if bias is not None:
        inputs.append(gs.Constant(names.new(f"{base}_bias"), bias.astype(np.float32)))
    node.op, node.domain, node.attrs = "DynamicQuantizeMatMul", CONTRIB_DOMAIN, {}
    node.inputs.clear()
    node.inputs.extend(inputs)
    node.outputs.clear()
    node.outputs.append(out)


def apply_dynamic(graph: gs.Graph, choices: tuple[KernelChoice, ...], spec: WeightSpec, qmax: int) -> None:
    """Write every quantized choice of ``choices`` into ``graph`` (in place; then cleaned and sorted)."""
    index = GraphIndex.build(graph)
    names = UniqueNames.of_graph(graph)
    by_name = {n.name: n for n in graph.nodes}
    for choice in choices:
        node = by_name[choice.node]
        if choice.kernel == DYNAMIC_MATMUL:
            _to_dynamic_matmul(graph, index, node, names, spec, qmax)
        elif choice.kernel == DYNAMIC_LSTM:
            to_dynamic_lstm(graph, index, node, names, spec, qmax, choice.rule)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
