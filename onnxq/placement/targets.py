"""Targets as data: what each runtime wants from a QDQ model.

TENSORRT: int8 symmetric activations with zero-point 0, per-channel int8 weights, bias left float, Q/DQ
only on inputs of weighted ops (TensorRT fuses the rest). ORT_CPU: uint8 asymmetric activations, int8
weights, int32 bias, Q/DQ on inputs and outputs of the ops onnxruntime has fast x86 int8 kernels for
(its x86 kernels are only fast with uint8 activations: see BENCHMARKS.md).

A target's rules run in the order listed; ``placement.resolve`` merges what they propose. Everything a
rule needs to know about the target is a field here, so no rule tests which target it runs for.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxq.graph.ops import ORT_CPU_QUANTIZED, WEIGHTED
from onnxq.placement.ort_rules import (
    rule_float_consumers,
    rule_integer_derived,
    rule_normalization_inputs,
    rule_output_tail,
)
from onnxq.placement.proposals import Rule
from onnxq.placement.recurrent import ORT_NO_KERNEL_REASON, TENSORRT_REASON, rule_recurrent
from onnxq.placement.rules import (
    rule_op_inputs_outputs,
    rule_residual_add,
    rule_shared_scales,
    rule_unsupported_nodes,
    rule_weighted_inputs,
)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    activation_dtype: str
    activation_symmetric: bool
    quantized_ops: frozenset[str]  # ops whose inputs (and, where a rule says so, outputs) get Q/DQ
    quantize_bias: bool  # int32 bias of Conv and Gemm
    # Ops of quantized_ops without weights whose every input is an activation; the others take their
    # activation on input 0 (the rest are shapes, scales, indices).
    all_inputs_ops: frozenset[str]
    # Weighted ops the runtime runs with int8 inputs and a float output when no Q follows them: their
    # outputs get Q/DQ only from consumers that run in int8.
    float_output_ops: frozenset[str]
    not_quantized_reason: str  # why a node no rule quantized stays float; "{op}" is its op type
    rules: tuple[Rule, ...]
    # Recurrent ops the runtime has a dynamic integer kernel for (placement.recurrent); the others stay
    # float with this reason ("{op}": the op type).
    recurrent_kernels: frozenset[str] = frozenset()
    recurrent_float_reason: str = "{op} stays float"


TENSORRT = TargetSpec(
    name="tensorrt",
    activation_dtype="int8",
    activation_symmetric=True,
    quantized_ops=WEIGHTED,
    quantize_bias=False,
    all_inputs_ops=frozenset(),
    float_output_ops=frozenset(),
    not_quantized_reason=(
        "TensorRT fuses or runs {op} itself; Q/DQ goes on inputs of Conv/ConvTranspose/Gemm/MatMul only"
    ),
    rules=(rule_recurrent, rule_unsupported_nodes, rule_weighted_inputs, rule_residual_add, rule_shared_scales),
    recurrent_float_reason=TENSORRT_REASON,
)

ORT_CPU = TargetSpec(
    name="ort-cpu",
    activation_dtype="uint8",
    activation_symmetric=False,
    quantized_ops=ORT_CPU_QUANTIZED,
    quantize_bias=True,
    all_inputs_ops=frozenset({"Add", "Mul", "Concat"}),
    # onnxruntime's MatMulIntegerToFloat: as fast as QLinearMatMul and one rounding step fewer
    float_output_ops=frozenset({"MatMul", "Gemm"}),
    not_quantized_reason="{op} has no fast int8 kernel in onnxruntime CPU; left in float",
    # The rules that keep tensors float come before the ones that quantize, so those read what is kept.
    rules=(rule_recurrent, rule_unsupported_nodes, rule_integer_derived, rule_output_tail, rule_normalization_inputs,
           rule_float_consumers, rule_weighted_inputs, rule_op_inputs_outputs, rule_shared_scales),
    recurrent_kernels=frozenset({"LSTM"}),  # com.microsoft.DynamicQuantizeLSTM
    recurrent_float_reason=ORT_NO_KERNEL_REASON,
)
