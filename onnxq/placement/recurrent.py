"""Recurrent layers (LSTM, GRU, RNN): which integer kernel, if any, each target runs them with.

Measured on onnxruntime 1.32 CPU, one thread (tests/unit/rewrite/test_recurrent.py checks the kernels;
README "Recurrent layers" has the figures):

* LSTM: onnxruntime has ``com.microsoft.DynamicQuantizeLSTM``: int8 weights (per channel: one scale per
  gate row and direction), inputs and hidden state quantized to uint8 at each step. On a bidirectional
  LSTM of 512 units it runs 3.1x faster than the float LSTM, at 36 dB SQNR on its output. The ort-cpu
  target writes it; it needs no calibrated range, so static and dynamic mode write the same node.
* GRU, RNN: onnxruntime has no integer kernel (its own quantizer's registry has none either). Int8
  weights behind DequantizeLinear make the file smaller (romanizer encoder: 2.8 MB -> 1.05 MB) but run
  slower, the weights being dequantized at every run (1.93 -> 2.25 ms, +17 %): they stay float.
* TensorRT: its ONNX parser imports LSTM, GRU and RNN with FP32, FP16 and BF16 only ("Supported Types"
  in onnx-tensorrt's docs/operators.md, TensorRT 10.15), and has no DynamicQuantizeLinear or
  MatMulInteger: the recurrent layers stay float, and the Conv/MatMul/Gemm around them get Q/DQ as usual.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx_graphsurgeon as gs

from onnxq.graph.ops import RECURRENT
from onnxq.graph.query import GraphIndex
from onnxq.placement.proposals import Context, Decided, Proposal, QuantizedNode, skip

DYNAMIC_LSTM = "com.microsoft.DynamicQuantizeLSTM"
# attributes com.microsoft.DynamicQuantizeLSTM takes (the ONNX LSTM's but ``layout``)
_LSTM_ATTRIBUTES = frozenset({"activation_alpha", "activation_beta", "activations", "clip", "direction",
                              "hidden_size", "input_forget"})

TENSORRT_REASON = (
    "{op} stays float: TensorRT's ONNX parser imports {op} with FP32/FP16/BF16 only (onnx-tensorrt "
    "docs/operators.md); the Conv/MatMul/Gemm around it are quantized")
ORT_NO_KERNEL_REASON = (
    "{op} stays float: onnxruntime has no integer {op} kernel, and int8 weights behind DequantizeLinear "
    "would shrink the file but run slower (dequantized at every run: +17 % on a GRU encoder)")


def lstm_problem(index: GraphIndex, node: gs.Node) -> str | None:
    """Why ``node`` (an LSTM) cannot become DynamicQuantizeLSTM, or None when it can."""
    if node.attrs.get("layout", 0) != 0:
        return "it has layout=1 (batch first), which DynamicQuantizeLSTM does not take"
    unknown = sorted(set(node.attrs) - _LSTM_ATTRIBUTES - {"layout"})
    if unknown:
        return f"DynamicQuantizeLSTM has no attribute {unknown[0]!r}"
    for idx, what in ((1, "W"), (2, "R")):
        if len(node.inputs) <= idx:
            return f"its input {what} is missing"
        value = index.constant_value(node.inputs[idx])
        if value is None:
            return f"its weight {what} is computed at run time, not a constant"
        if value.dtype != np.float32 or value.ndim != 3:
            return f"its weight {what} is not a 3-D float32 tensor"
    for tensor in node.inputs[:1] + node.outputs:
        dtype = index.dtype(tensor) if tensor.name else None
        if dtype is not None and dtype != np.float32:
            return "it computes in a type other than float32"
    return None


def rule_recurrent(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """LSTM with the runtime's dynamic integer kernel where the target has one; otherwise float with the
    target's reason (``TargetSpec.recurrent_kernels``, ``recurrent_float_reason``)."""
    for node in ctx.index.graph.nodes:
        if node.op not in RECURRENT or node.name in decided.skipped:
            continue
        if node.name in ctx.excluded:
            yield skip(node, "user-exclude", ctx.excluded[node.name])
        elif node.op in ctx.target.recurrent_kernels:
            problem = lstm_problem(ctx.index, node)
            if problem is None:
                yield QuantizedNode(node.name)
            else:
                yield skip(node, "recurrent", f"{node.op} stays float: {problem}")
        else:
            yield skip(node, "recurrent", ctx.target.recurrent_float_reason.format(op=node.op))
