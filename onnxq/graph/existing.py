"""Quantization a model already carries: Q/DQ pairs, QLinear* kernels, integer convolutions and matmuls,
dynamic quantization.

Users point onnxq at models that are already int8 (onnxruntime's quantize_dynamic output, a vendor's QDQ
export, onnxq's own output). Planning such a model again would stack a second Q/DQ layer on the first and
label the outputs of weight DequantizeLinear nodes as activations. This module recognises every form and
describes it, so ``inspect`` can show it and ``quantize`` can refuse with the reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxq.graph.usage import all_nodes

# Ops whose presence means the model computes with integers (or fake-quantizes) already.
QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
INTEGER_KERNELS = frozenset({
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearWhere", "QLinearReduceMean",
    "QGemm", "QAttention", "QEmbedLayerNormalization", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
    "MatMulNBits", "MatMulBnb4", "GatherBlockQuantized",
})
DYNAMIC = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})
QUANTIZED_OPS = QDQ | INTEGER_KERNELS | DYNAMIC


@dataclass(frozen=True)
class QuantizedTensor:
    """One tensor a DequantizeLinear restores: what it holds, in which format, at which scale."""

    tensor: str  # the DequantizeLinear's output
    kind: str  # "weight", "bias" (int32 constant) or "activation" (computed at run time)
    dtype: str  # integer type of the quantized values
    axis: int | None  # per-channel axis, None for one scale
    scale_min: float
    scale_max: float
    zero_point: str  # "0" when every zero point is 0, else "min..max"
    consumers: tuple[str, ...]  # op types reading the dequantized tensor


@dataclass(frozen=True)
class ExistingQuantization:
    """What a model carries: op counts of every quantized op and each Q/DQ-restored tensor."""

    ops: dict[str, int]
    tensors: tuple[QuantizedTensor, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """One line: "QuantizeLinear x50, DequantizeLinear x100 (50 weights int8 per channel, ...)"."""
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.ops.items(), key=lambda kv: (-kv[1], kv[0])))
        if not self.tensors:
            return ops
        weights = [t for t in self.tensors if t.kind == "weight"]
        acts = [t for t in self.tensors if t.kind == "activation"]
        parts = []
        biases = [t for t in self.tensors if t.kind == "bias"]
        for label, group in (("weights", weights), ("biases", biases), ("activations", acts)):
            if group:
                dtypes = "/".join(sorted({t.dtype for t in group}))
                per_channel = sum(t.axis is not None for t in group)
                how = f", {per_channel} per channel" if per_channel else ""
                parts.append(f"{len(group)} {label} {dtypes}{how}")
        return f"{ops} ({'; '.join(parts)})"


def existing_quantization(model: onnx.ModelProto) -> ExistingQuantization | None:
    """The quantization ``model`` already carries, or None for a float model."""
    nodes = all_nodes(model.graph)
    ops = Counter(n.op_type for n in nodes if n.op_type in QUANTIZED_OPS)
    if not ops:
        return None
    consts = {t.name: t for t in model.graph.initializer}
    consts.update({n.output[0]: a.t for n in nodes if n.op_type == "Constant" for a in n.attribute
                   if a.name == "value" and a.HasField("t")})
    readers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    producers = {o: n for n in nodes for o in n.output}
    tensors = [_tensor(n, consts, producers, readers) for n in nodes if n.op_type == "DequantizeLinear"]
    return ExistingQuantization(dict(ops), tuple(t for t in tensors if t is not None))


def _tensor(dq: onnx.NodeProto, consts: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto],
            readers: dict[str, list[str]]) -> QuantizedTensor | None:
    if len(dq.input) < 2 or dq.input[1] not in consts:
        return None
    scale = numpy_helper.to_array(consts[dq.input[1]]).astype(np.float64)
    zp = numpy_helper.to_array(consts[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in consts else None
    source = dq.input[0]
    quantize = producers.get(source)
    if source in consts:  # an integer initializer (onnxq's dq-only form, onnxruntime's default)
        dtype = numpy_helper.to_array(consts[source]).dtype
        kind = "bias" if dtype == np.int32 else "weight"  # int32: a bias at scale x_scale * w_scale
    else:  # float weight -> Q -> DQ counts as a weight too
        kind = "weight" if quantize is not None and quantize.op_type == "QuantizeLinear" and \
            quantize.input[0] in consts else "activation"
        dtype = zp.dtype if zp is not None else np.dtype(np.uint8)  # DequantizeLinear's default zero point
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) if scale.ndim else None
    if zp is None or not np.any(zp):
        zero = "0"
    else:
        zero = f"{int(zp.min())}..{int(zp.max())}" if zp.size > 1 else str(int(zp))
    return QuantizedTensor(dq.output[0], kind, str(np.dtype(dtype)), axis, float(scale.min()), float(scale.max()),
                           zero, tuple(dict.fromkeys(readers.get(dq.output[0], ()))))
