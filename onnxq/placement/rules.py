"""Placement rules: one small function each, reading the graph and writing proposals to a builder.

Sources for the TensorRT rules: TensorRT's "Explicit Quantization" guide and NVIDIA Model Optimizer's
partitioner (see notes/peers-and-algorithms.md section 3). Every proposal names its rule, so the plan
explains itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from onnxq.config import WeightSpec
from onnxq.graph.ops import CLIP_LIKE, CONTROL_FLOW, PASS_THROUGH, RECURRENT, WEIGHTED, weight_axis
from onnxq.graph.query import GraphIndex, same_shape
from onnxq.placement.targets import TargetSpec
from onnxq.records import QuantPlan, Role, Skip, TensorQuantSpec

# Inputs of non-weighted ops that carry activations (ORT-CPU target); others are shapes, scales, indices.
ACTIVATION_INPUTS = {"Add": None, "Mul": None, "Concat": None}  # None = every input
# Weighted ops onnxruntime runs with int8 inputs and a float output when no Q follows them.
INT_TO_FLOAT = frozenset({"MatMul", "Gemm"})


@dataclass
class PlanBuilder:
    """Accumulates proposals while rules run; ``build`` freezes them into a QuantPlan."""

    index: GraphIndex
    target: TargetSpec
    weights: WeightSpec
    excluded: dict[str, str]
    specs: dict[tuple[str, Role, int | None], dict] = field(default_factory=dict)
    skips: dict[str, Skip] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    quantized: set[str] = field(default_factory=set)
    forbidden: dict[str, str] = field(default_factory=dict)  # activation tensor -> rule keeping it float

    def forbid(self, tensor: str, rule: str) -> None:
        """Keep ``tensor`` float: no rule may put an activation Q/DQ on it afterwards."""
        self.forbidden.setdefault(tensor, rule)

    def add(self, tensor: str, role: Role, consumers: list[tuple[str, int]], rule: str, *,
            axis: int | None = None, bias_of: tuple[str, str] | None = None) -> None:
        if role is Role.ACTIVATION and tensor in self.forbidden:
            return
        key = (tensor, role, axis)
        entry = self.specs.setdefault(key, {"consumers": [], "rule": rule, "bias_of": bias_of})
        for c in consumers:
            if c not in entry["consumers"]:
                entry["consumers"].append(c)

    def skip(self, node: gs.Node, rule: str, reason: str) -> None:
        self.skips.setdefault(node.name, Skip(node.name, node.op, rule, reason))

    def has_activation(self, tensor: str) -> bool:
        return (tensor, Role.ACTIVATION, None) in self.specs

    def find(self, tensor: str) -> str:
        while self.parent.get(tensor, tensor) != tensor:
            tensor = self.parent[tensor]
        return tensor

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.parent.setdefault(ra, ra)

    def build(self) -> QuantPlan:
        order = {name: i for i, name in enumerate(self.index.tensors)}
        members: dict[str, list[str]] = {}
        for (tensor, role, _), _entry in self.specs.items():
            if role is Role.ACTIVATION and tensor in self.parent:
                members.setdefault(self.find(tensor), []).append(tensor)
        group_name = {
            t: min(ms, key=lambda m: order.get(m, 0)) for ms in members.values() if len(ms) > 1 for t in ms
        }
        specs = []
        for (tensor, role, axis), entry in sorted(
            self.specs.items(), key=lambda kv: (order.get(kv[0][0], 0), kv[0][1].value, kv[0][2] or 0)
        ):
            if role is Role.ACTIVATION:
                dtype, symmetric = self.target.activation_dtype, self.target.activation_symmetric
            else:
                dtype, symmetric = ("int8" if role is Role.WEIGHT else "int32"), True
            specs.append(TensorQuantSpec(
                tensor=tensor, role=role, dtype=dtype, symmetric=symmetric,
                consumers=tuple(entry["consumers"]), rule=entry["rule"], axis=axis,
                group=group_name.get(tensor) if role is Role.ACTIVATION else None, bias_of=entry["bias_of"],
            ))
        for node in self.index.graph.nodes:
            if node.name not in self.quantized and node.name not in self.skips:
                self.skip(node, "not-a-quantized-op", _not_quantized_reason(node.op, self.target))
        skips = sorted(self.skips.values(), key=lambda s: self.index.order.get(s.node, 0))
        quantized = sorted(self.quantized, key=lambda n: self.index.order.get(n, 0))
        return QuantPlan(self.target.name, tuple(specs), tuple(skips), tuple(quantized))


def _not_quantized_reason(op: str, target: TargetSpec) -> str:
    if target.name == "tensorrt":
        return f"TensorRT fuses or runs {op} itself; Q/DQ goes on inputs of Conv/ConvTranspose/Gemm/MatMul only"
    return f"{op} has no fast int8 kernel in onnxruntime CPU; left in float"


def rule_unsupported_nodes(b: PlanBuilder) -> None:
    """Control flow, recurrent ops and custom domains stay in float (their subgraphs are not rewritten)."""
    for node in b.index.graph.nodes:
        if node.op in CONTROL_FLOW:
            b.skip(node, "control-flow", f"{node.op} subgraphs are left in float (onnxq does not quantize inside them)")
        elif node.op in RECURRENT:
            b.skip(node, "recurrent", f"{node.op} is left in float: no TensorRT/ORT int8 Q/DQ kernel for it")
        elif node.domain not in (None, "", "ai.onnx"):
            b.skip(node, "custom-domain", f"op {node.domain}::{node.op} is not a standard ONNX op; left in float")


def _activation_ok(b: PlanBuilder, node: gs.Node, tensor: gs.Tensor) -> bool:
    if b.index.dtype(tensor) is None:
        why = f"the type of input {tensor.name!r} is unknown (shape inference could not type it)"
        b.skip(node, "unknown-dtype", why + ": left in float")
        return False
    if not b.index.is_float(tensor):
        b.skip(node, "integer-tensor", f"input {tensor.name!r} is not a float tensor: integers are never quantized")
        return False
    return True


def _weight_axis(b: PlanBuilder, node: gs.Node, idx: int, value) -> int | None:
    if not b.weights.per_channel or value is None or value.ndim == 0:
        return None
    if node.op == "ConvTranspose" and not b.weights.convtranspose_per_channel:
        return None
    if node.op == "MatMul" and value.ndim != 2:
        return None  # TensorRT supports per-channel MatMul weights only for a constant 2-D B
    return weight_axis(node.op, idx, node.attrs, value.ndim)


def rule_weighted_inputs(b: PlanBuilder) -> None:
    """Q/DQ on the activation and weight inputs of Conv, ConvTranspose, Gemm and MatMul."""
    for node in b.index.graph.nodes:
        if node.op not in WEIGHTED or node.name in b.skips:
            continue
        if node.name in b.excluded:
            b.skip(node, "user-exclude", b.excluded[node.name])
            continue
        inputs = node.inputs[:2]
        if len(inputs) < 2 or any(not t.name for t in inputs):
            continue
        constant = [b.index.is_constant(t) for t in inputs]
        if all(constant):
            b.skip(node, "constant-inputs", "all inputs are constant: nothing to calibrate")
            continue
        activations = [t for t, c in zip(inputs, constant) if not c]
        if not all(_activation_ok(b, node, t) for t in activations):
            continue
        kept = [t.name for t in activations if t.name in b.forbidden]
        if kept:
            b.skip(node, b.forbidden[kept[0]], f"input {kept[0]!r} is kept float by rule {b.forbidden[kept[0]]}")
            continue
        rule = "weighted-op-input"
        for idx, (tensor, is_const) in enumerate(zip(inputs, constant)):
            if is_const:
                value = b.index.constant_value(tensor)
                if value is None or value.dtype.kind != "f":
                    continue
                axis = _weight_axis(b, node, idx, value)
                b.add(tensor.name, Role.WEIGHT, [(node.name, idx)], rule, axis=axis)
            else:
                b.add(tensor.name, Role.ACTIVATION, [(node.name, idx)], rule)
        b.quantized.add(node.name)
        if b.target.quantize_bias:
            _add_bias(b, node, inputs, constant)


def _add_bias(b: PlanBuilder, node: gs.Node, inputs, constant) -> None:
    if node.op not in ("Conv", "Gemm") or len(node.inputs) < 3 or not constant[1] or constant[0] is True:
        return
    bias = node.inputs[2]
    value = b.index.constant_value(bias) if bias.name else None
    weight = b.index.constant_value(inputs[1])
    if value is None or value.ndim != 1 or weight is None or weight.ndim < 2:
        return
    axis = _weight_axis(b, node, 1, weight)
    if node.op == "Gemm" and (node.attrs.get("transA", 0) or value.shape[0] != weight.shape[0 if axis == 0 else -1]):
        return
    if node.op == "Conv" and value.shape[0] != weight.shape[0]:
        return  # a bias that does not match the output channels: no int32 form (the model is malformed)
    b.add(bias.name, Role.BIAS, [(node.name, 2)], "int32-bias", axis=0 if axis is not None else None,
          bias_of=(inputs[0].name, inputs[1].name))


def _fusable_producer(b: PlanBuilder, tensor: gs.Tensor) -> gs.Node | None:
    node = b.index.producer.get(tensor.name)
    if node is not None and node.op in WEIGHTED and node.name in b.quantized:
        return node
    return None


def rule_residual_add(b: PlanBuilder) -> None:
    """Residual Add: Q/DQ on the shortcut input only, so TensorRT fuses Conv+Add into one int8 kernel.

    The input produced directly by a quantized weighted op is the fused branch; when both are, the one
    produced later (the longer path) is. The other input gets Q/DQ.
    """
    for node in b.index.graph.nodes:
        if node.op != "Add" or len(node.inputs) != 2 or node.name in b.skips:
            continue
        x, y = node.inputs
        if any(b.index.is_constant(t) or not b.index.is_float(t) for t in (x, y)):
            continue
        if not same_shape(x.shape, y.shape):
            continue  # a broadcast (bias, scale): TensorRT fuses only an elementwise residual
        px, py = _fusable_producer(b, x), _fusable_producer(b, y)
        if px is None and py is None:
            continue
        if node.name in b.excluded:
            b.skip(node, "user-exclude", b.excluded[node.name])
            continue
        if px is not None and py is not None:
            fused_is_x = b.index.order[px.name] > b.index.order[py.name]
        else:
            fused_is_x = px is not None
        shortcut, idx = (y, 1) if fused_is_x else (x, 0)
        b.add(shortcut.name, Role.ACTIVATION, [(node.name, idx)], "residual-add-shortcut")
        b.quantized.add(node.name)


def rule_op_inputs_outputs(b: PlanBuilder) -> None:
    """ORT-CPU: Q/DQ on the float inputs and outputs of ops with fast int8 kernels.

    An output read only by Relu/Clip is quantized after the activation instead, so onnxruntime folds the
    activation into the quantized range (its ClipQuantFusion) and forms QLinearConv. MatMul and Gemm
    outputs get Q/DQ only from consumers that run in int8: without it onnxruntime runs them as
    MatMulIntegerToFloat (int8 inputs, float output), as fast and one rounding step fewer.
    """
    for node in b.index.graph.nodes:
        if node.op not in b.target.quantized_ops or node.name in b.skips:
            continue
        if node.name in b.excluded:
            b.skip(node, "user-exclude", b.excluded[node.name])
            continue
        if node.op not in WEIGHTED and not _quantize_op_inputs(b, node):
            continue
        if node.name not in b.quantized or node.op in INT_TO_FLOAT:
            continue
        for out in node.outputs[:1]:
            _add_output(b, node, out)


def _quantize_op_inputs(b: PlanBuilder, node: gs.Node) -> bool:
    """Q/DQ on the activation inputs of a non-weighted op, unless no integer kernel could form."""
    wanted = ACTIVATION_INPUTS.get(node.op, [0])
    indexes = range(len(node.inputs)) if wanted is None else wanted
    tensors = [(i, node.inputs[i]) for i in indexes if i < len(node.inputs) and node.inputs[i].name]
    if wanted is None and any(b.index.is_constant(t) for _, t in tensors):
        b.skip(node, "constant-operand", "a constant operand is not quantized, so onnxruntime cannot form its "
               f"QLinear{node.op} (it needs every input dequantized); Q/DQ around it would only add rounding")
        return False
    tensors = [(i, t) for i, t in tensors if not b.index.is_constant(t)]
    if not tensors or not all(b.index.is_float(t) for _, t in tensors):
        return False
    kept = [t.name for _, t in tensors if t.name in b.forbidden]
    if kept:
        b.skip(node, b.forbidden[kept[0]], f"input {kept[0]!r} is kept float by rule {b.forbidden[kept[0]]}")
        return False
    out = node.outputs[0] if node.outputs else None
    if out is not None and out.name in b.forbidden:
        b.skip(node, b.forbidden[out.name], f"its output is kept float by rule {b.forbidden[out.name]}, so no "
               "integer kernel can form; Q/DQ on its inputs would only add rounding")
        return False
    for i, t in tensors:
        b.add(t.name, Role.ACTIVATION, [(node.name, i)], "ort-op-input")
    b.quantized.add(node.name)
    return True


def _add_output(b: PlanBuilder, node: gs.Node, out: gs.Tensor) -> None:
    if not b.index.is_float(out) or b.index.is_graph_output(out.name):
        return
    follower = b.index.single_consumer(out.name)
    if follower is not None and follower.op in CLIP_LIKE and follower.name not in b.excluded:
        if b.index.is_graph_output(follower.outputs[0].name) or follower.outputs[0].name in b.forbidden:
            return
        b.quantized.add(follower.name)
        out = follower.outputs[0]
    if out.name in b.forbidden:
        return
    users = [(n.name, i) for n, i in b.index.consumers.get(out.name, [])]
    if users:
        b.add(out.name, Role.ACTIVATION, users, "ort-op-output")


def rule_shared_scales(b: PlanBuilder) -> None:
    """Concat inputs and output share one scale; pass-through ops reuse their input's scale.

    Only tensors already planned are grouped: equal scales let TensorRT (and onnxruntime) move Q/DQ
    through these ops and run them in int8 without requantizing.
    """
    for node in b.index.graph.nodes:
        if node.name in b.excluded:
            continue
        if node.op == "Concat":
            tensors = [t.name for t in list(node.inputs) + node.outputs[:1] if b.has_activation(t.name)]
        elif node.op in PASS_THROUGH and node.inputs and node.outputs:
            tensors = [t.name for t in (node.inputs[0], node.outputs[0]) if b.has_activation(t.name)]
        else:
            continue
        for other in tensors[1:]:
            b.union(tensors[0], other)
