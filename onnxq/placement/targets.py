"""Targets as data: what each runtime wants from a QDQ model.

TENSORRT: int8 symmetric activations with zero-point 0, per-channel int8 weights, bias left float, Q/DQ
only on inputs of weighted ops (TensorRT fuses the rest). ORT_CPU: uint8 asymmetric activations, int8
weights, int32 bias, Q/DQ on inputs and outputs of the ops onnxruntime has fast x86 int8 kernels for
(its x86 kernels are only fast with uint8 activations: see BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxq.graph.ops import ORT_CPU_QUANTIZED, WEIGHTED


@dataclass(frozen=True)
class TargetSpec:
    name: str
    activation_dtype: str
    activation_symmetric: bool
    quantized_ops: frozenset[str]
    quantize_outputs: bool
    quantize_bias: bool
    residual_add: bool


TENSORRT = TargetSpec(
    name="tensorrt",
    activation_dtype="int8",
    activation_symmetric=True,
    quantized_ops=WEIGHTED,
    quantize_outputs=False,
    quantize_bias=False,
    residual_add=True,
)

ORT_CPU = TargetSpec(
    name="ort-cpu",
    activation_dtype="uint8",
    activation_symmetric=False,
    quantized_ops=ORT_CPU_QUANTIZED,
    quantize_outputs=True,
    quantize_bias=True,
    residual_add=False,
)
