"""The op taxonomy: one table of frozensets that every rule reads.

Why a single table: placement rules, the report and the tests must agree on what "a weighted op" or
"a pass-through op" is; spreading these sets over modules is how quantizers drift into inconsistent
placements.
"""

from __future__ import annotations

import numpy as np

# Ops whose inputs TensorRT runs in int8 (Q/DQ on activation and weight inputs, none on outputs).
WEIGHTED = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

# Ops that only move or select values: output range is a subset of the input range, so the output can
# reuse the input's scale exactly (TensorRT propagates Q/DQ through them).
PASS_THROUGH = frozenset(
    {
        "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Gather",
        "MaxPool", "GlobalMaxPool", "Identity", "DepthToSpace", "SpaceToDepth", "Pad", "Resize",
        "Upsample", "Tile", "Expand",
    }
)

# Activations ORT fuses into a following QuantizeLinear when the quantized range makes them redundant.
CLIP_LIKE = frozenset({"Relu", "Clip"})

# Ops with subgraphs: onnxq never quantizes inside them (left in float, with a reason).
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
RECURRENT = frozenset({"LSTM", "GRU", "RNN"})

# Ops the onnxruntime CPU target quantizes (inputs and outputs), following onnxruntime's QDQ registry
# restricted to the kernels that have fast int8 implementations on x86.
ORT_CPU_QUANTIZED = frozenset(
    {
        "Conv", "Gemm", "MatMul", "Add", "Mul", "GlobalAveragePool", "AveragePool", "MaxPool",
        "Concat", "Resize", "Sigmoid", "LeakyRelu", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
        "Flatten", "Split", "Gather",
    }
)

FLOAT_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64)})


def weight_axis(op_type: str, input_index: int, attrs: dict, weight_rank: int) -> int | None:
    """Output-channel axis of a weight for per-channel quantization (notes section 2.6).

    Conv: [Cout, Cin/g, k...] -> 0. ConvTranspose: [Cin, Cout/g, k...] -> 1. Gemm: B is [N, K] when
    transB else [K, N] -> 0 if transB else 1. MatMul with constant B [..., K, N] -> last axis.
    Returns None when the input is not a per-channel weight (e.g. Gemm's A).
    """
    if op_type == "Conv" and input_index == 1:
        return 0
    if op_type == "ConvTranspose" and input_index == 1:
        return 1
    if op_type == "Gemm":
        if input_index == 1:
            return 0 if attrs.get("transB", 0) else 1
        if input_index == 0 and attrs.get("transA", 0):
            return None
        return None
    if op_type == "MatMul" and input_index == 1:
        return weight_rank - 1
    return None
