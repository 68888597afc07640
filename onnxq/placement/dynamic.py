"""The plan of dynamic quantization (``--mode dynamic``): which kernel runs each candidate node, and why.

No calibration data: the kernels quantize their float inputs at run time (onnxruntime's uint8 range of
each input tensor, computed per run), and only the weights are quantized ahead (int8, symmetric).

* MatMul with a constant 2-D B, Gemm with a constant B (transA = 0, a bias of one row or none):
  ``com.microsoft.DynamicQuantizeMatMul``, weights per output column where ``per_channel`` (the kernel
  takes a ``[N]`` scale: checked against onnxruntime in tests/unit/rewrite/test_dynamic.py), a bias Add
  that follows with a constant ``[N]`` operand folded in as the kernel's bias.
* LSTM: ``com.microsoft.DynamicQuantizeLSTM`` (placement.recurrent).
* GRU, RNN: float (no integer kernel in onnxruntime; placement.recurrent has the measurement).
* Conv: float. onnxruntime's dynamic convolution is ConvInteger with the input's scale computed and
  applied around it by separate nodes; static mode (calibrated QLinearConv) is its fast form.

Pure: reads the graph, returns :class:`onnxq.records.kernels.KernelChoice` records; rewrite.dynamic
writes them.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxq.config import QuantConfig
from onnxq.graph.ops import RECURRENT
from onnxq.graph.query import GraphIndex
from onnxq.placement.ignore import excluded_nodes
from onnxq.placement.recurrent import DYNAMIC_LSTM, ORT_NO_KERNEL_REASON, lstm_problem
from onnxq.records.kernels import FLOAT, KernelChoice

DYNAMIC_MATMUL = "com.microsoft.DynamicQuantizeMatMul"
CANDIDATES = frozenset({"MatMul", "Gemm", "Conv"}) | RECURRENT


def matmul_problem(index: GraphIndex, node: gs.Node) -> str | None:
    """Why ``node`` (MatMul or Gemm) cannot become DynamicQuantizeMatMul, or None."""
    a, b = node.inputs[0], node.inputs[1]
    value = index.constant_value(b)
    if value is None:
        return "its B input is computed at run time (both operands are activations)"
    if value.dtype != np.float32 or value.ndim != 2:
        return "its weight is not a 2-D float32 tensor"
    if index.dtype(a) is not None and index.dtype(a) != np.float32:
        return "its input is not float32"
    if node.op == "Gemm":
        if node.attrs.get("transA", 0):
            return "Gemm with transA=1 (DynamicQuantizeMatMul multiplies A as it is)"
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = index.constant_value(node.inputs[2])
            n = value.shape[0] if node.attrs.get("transB", 0) else value.shape[1]
            if c is None or c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
                return "its C input is not a constant bias of one row"
    return None


def _choice(node: gs.Node, index: GraphIndex, config: QuantConfig, excluded: dict[str, str],
            weights: str) -> KernelChoice:
    if node.name in excluded:
        return KernelChoice(node.name, node.op, FLOAT, "float", "user-exclude", excluded[node.name])
    if node.op in ("MatMul", "Gemm"):
        problem = matmul_problem(index, node)
        if problem is None:
            return KernelChoice(node.name, node.op, DYNAMIC_MATMUL, weights, "dynamic-matmul",
                                "onnxruntime's integer MatMul: input quantized to uint8 per run, int8 weights, "
                                "float output")
        return KernelChoice(node.name, node.op, FLOAT, "float", "dynamic-matmul", f"stays float: {problem}")
    if node.op == "LSTM":
        problem = lstm_problem(index, node)
        if problem is None:
            return KernelChoice(node.name, node.op, DYNAMIC_LSTM, weights, "recurrent-dynamic-lstm",
                                "onnxruntime's integer LSTM: weights int8, inputs and hidden state quantized to "
                                "uint8 at each step")
        return KernelChoice(node.name, node.op, FLOAT, "float", "recurrent", f"stays float: {problem}")
    if node.op in RECURRENT:
        return KernelChoice(node.name, node.op, FLOAT, "float", "recurrent", ORT_NO_KERNEL_REASON.format(op=node.op))
    return KernelChoice(node.name, node.op, FLOAT, "float", "dynamic-conv",
                        "Conv stays float in dynamic mode: onnxruntime's fast int8 convolution needs a calibrated "
                        "input range (static mode, --mode static)")


def dynamic_plan(index: GraphIndex, config: QuantConfig, weights: str) -> tuple[KernelChoice, ...]:
    """One KernelChoice per MatMul, Gemm, Conv and recurrent node of ``index``'s graph, in graph order.

    ``weights`` describes the weights the quantized ones get (rewrite.recurrent.weights_text)."""
    graph = index.graph
    excluded = excluded_nodes(graph, config.exclude_nodes, config.exclude_ops)
    return tuple(_choice(n, index, config, excluded, weights) for n in graph.nodes if n.op in CANDIDATES)
