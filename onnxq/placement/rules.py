"""Placement rules: one small function each, reading the graph and returning proposals.

Sources for the TensorRT rules: TensorRT's "Explicit Quantization" guide and NVIDIA Model Optimizer's
partitioner (see notes/peers-and-algorithms.md section 3). Every proposal names its rule, so the plan
explains itself. A rule takes ``(context, decided)`` and yields proposals (``placement.proposals``);
``placement.resolve`` merges them. What differs between targets is read from ``context.target``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import onnx_graphsurgeon as gs

from onnxq.graph.ops import CLIP_LIKE, CONTROL_FLOW, PASS_THROUGH, RECURRENT, WEIGHTED, weight_axis
from onnxq.graph.query import same_shape
from onnxq.placement.proposals import (
    Context,
    Decided,
    Proposal,
    Quantize,
    QuantizedNode,
    SameScale,
    skip,
    user_exclude,
)
from onnxq.records import Role, Skip


def rule_unsupported_nodes(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """Control-flow nodes themselves, recurrent ops and custom domains stay in float.

    An If/Loop/Scan has no integer form; its bodies are planned node by node like the top level
    (``placement.plan``), so the work inside them is quantized where the rules allow.
    """
    for node in ctx.index.graph.nodes:
        if node.op in CONTROL_FLOW:
            yield skip(node, "control-flow",
                       f"{node.op} itself has no integer form; the nodes of its subgraphs are planned one by one")
        elif node.op in RECURRENT and node.name not in decided.quantized:  # placement.recurrent's kernel
            yield skip(node, "recurrent",
                       f"{node.op} is left in float: no TensorRT/ORT int8 Q/DQ kernel for it")
        elif node.domain not in (None, "", "ai.onnx"):
            yield skip(node, "custom-domain",
                       f"op {node.domain}::{node.op} is not a standard ONNX op; left in float")


def _activation_problem(ctx: Context, node: gs.Node, tensor: gs.Tensor) -> Skip | None:
    if ctx.index.dtype(tensor) is None:
        why = f"the type of input {tensor.name!r} is unknown (shape inference could not type it)"
        return skip(node, "unknown-dtype", why + ": left in float")
    if not ctx.index.is_float(tensor):
        return skip(node, "integer-tensor",
                    f"input {tensor.name!r} is not a float tensor: integers are never quantized")
    return None


def _kept_input(decided: Decided, node: gs.Node, names: Sequence[str]) -> Skip | None:
    """The Skip of a node one of whose inputs an earlier rule keeps float (no integer kernel can form)."""
    kept = [n for n in names if n in decided.kept_float]
    if not kept:
        return None
    rule = decided.kept_float[kept[0]]
    return skip(node, rule, f"input {kept[0]!r} is kept float by rule {rule}")


def _weight_axis(ctx: Context, node: gs.Node, idx: int, value) -> int | None:
    if not ctx.weights.per_channel or value is None or value.ndim == 0:
        return None
    if node.op == "ConvTranspose" and not ctx.weights.convtranspose_per_channel:
        return None
    if node.op == "MatMul" and value.ndim != 2:
        return None  # TensorRT supports per-channel MatMul weights only for a constant 2-D B
    return weight_axis(node.op, idx, node.attrs, value.ndim)


def rule_weighted_inputs(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """Q/DQ on the activation and weight inputs of Conv, ConvTranspose, Gemm and MatMul."""
    for node in ctx.index.graph.nodes:
        if node.op not in WEIGHTED or node.name in decided.skipped:
            continue
        if node.name in ctx.excluded:
            yield user_exclude(ctx, node)
            continue
        inputs = node.inputs[:2]
        if len(inputs) < 2 or any(not t.name for t in inputs):
            continue
        constant = [ctx.index.is_constant(t) for t in inputs]
        if all(constant):
            yield skip(node, "constant-inputs", "all inputs are constant: nothing to calibrate")
            continue
        activations = [t for t, c in zip(inputs, constant) if not c]
        problem = next(filter(None, (_activation_problem(ctx, node, t) for t in activations)), None)
        problem = problem or _kept_input(decided, node, [t.name for t in activations])
        if problem is not None:
            yield problem
            continue
        yield from _weighted_node(ctx, node, inputs, constant)


def _weighted_node(ctx: Context, node: gs.Node, inputs, constant: list[bool]) -> Iterator[Proposal]:
    rule = "weighted-op-input"
    for idx, (tensor, is_const) in enumerate(zip(inputs, constant)):
        if is_const:
            value = ctx.index.constant_value(tensor)
            if value is None or value.dtype.kind != "f":
                continue
            axis = _weight_axis(ctx, node, idx, value)
            yield Quantize(tensor.name, Role.WEIGHT, ((node.name, idx),), rule, axis=axis)
        else:
            yield Quantize(tensor.name, Role.ACTIVATION, ((node.name, idx),), rule)
    yield QuantizedNode(node.name)
    if ctx.target.quantize_bias:
        yield from _bias(ctx, node, inputs, constant)


def _bias(ctx: Context, node: gs.Node, inputs, constant: list[bool]) -> Iterator[Proposal]:
    if node.op not in ("Conv", "Gemm") or len(node.inputs) < 3 or not constant[1] or constant[0] is True:
        return
    bias = node.inputs[2]
    value = ctx.index.constant_value(bias) if bias.name else None
    weight = ctx.index.constant_value(inputs[1])
    if value is None or value.ndim != 1 or weight is None or weight.ndim < 2:
        return
    axis = _weight_axis(ctx, node, 1, weight)
    if node.op == "Gemm" and (node.attrs.get("transA", 0) or value.shape[0] != weight.shape[0 if axis == 0 else -1]):
        return
    if node.op == "Conv" and value.shape[0] != weight.shape[0]:
        return  # a bias that does not match the output channels: no int32 form (the model is malformed)
    yield Quantize(bias.name, Role.BIAS, ((node.name, 2),), "int32-bias", axis=0 if axis is not None else None,
                   bias_of=(inputs[0].name, inputs[1].name))


def _fusable_producer(ctx: Context, decided: Decided, tensor: gs.Tensor) -> gs.Node | None:
    node = ctx.index.producer.get(tensor.name)
    if node is not None and node.op in WEIGHTED and node.name in decided.quantized:
        return node
    return None


def rule_residual_add(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """Residual Add: Q/DQ on the shortcut input only, so TensorRT fuses Conv+Add into one int8 kernel.

    The input produced directly by a quantized weighted op is the fused branch; when both are, the one
    produced later (the longer path) is. The other input gets Q/DQ.
    """
    index = ctx.index
    for node in index.graph.nodes:
        if node.op != "Add" or len(node.inputs) != 2 or node.name in decided.skipped:
            continue
        x, y = node.inputs
        if any(index.is_constant(t) or not index.is_float(t) for t in (x, y)):
            continue
        if not same_shape(x.shape, y.shape):
            continue  # a broadcast (bias, scale): TensorRT fuses only an elementwise residual
        px, py = _fusable_producer(ctx, decided, x), _fusable_producer(ctx, decided, y)
        if px is None and py is None:
            continue
        if node.name in ctx.excluded:
            yield user_exclude(ctx, node)
            continue
        if px is not None and py is not None:
            fused_is_x = index.order[px.name] > index.order[py.name]
        else:
            fused_is_x = px is not None
        shortcut, idx = (y, 1) if fused_is_x else (x, 0)
        yield Quantize(shortcut.name, Role.ACTIVATION, ((node.name, idx),), "residual-add-shortcut")
        yield QuantizedNode(node.name)


def rule_op_inputs_outputs(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """ORT-CPU: Q/DQ on the float inputs and outputs of ops with fast int8 kernels.

    An output read only by Relu/Clip is quantized after the activation instead, so onnxruntime folds the
    activation into the quantized range (its ClipQuantFusion) and forms QLinearConv. MatMul and Gemm
    outputs get Q/DQ only from consumers that run in int8: without it onnxruntime runs them as
    MatMulIntegerToFloat (int8 inputs, float output), as fast and one rounding step fewer.
    """
    quantized = set(decided.quantized)  # grows with this rule's own QuantizedNodes (a fused Relu)
    for node in ctx.index.graph.nodes:
        if node.op not in ctx.target.quantized_ops or node.name in decided.skipped:
            continue
        if node.name in ctx.excluded:
            yield user_exclude(ctx, node)
            continue
        if node.op not in WEIGHTED:
            proposals = _op_inputs(ctx, decided, node)
            yield from proposals
            if not any(isinstance(p, QuantizedNode) for p in proposals):
                continue
            quantized.add(node.name)
        if node.name not in quantized or node.op in ctx.target.float_output_ops:
            continue
        for out in node.outputs[:1]:
            for p in _op_output(ctx, decided, node, out):
                if isinstance(p, QuantizedNode):
                    quantized.add(p.node)
                yield p


def _op_inputs(ctx: Context, decided: Decided, node: gs.Node) -> list[Proposal]:
    """Q/DQ on the activation inputs of a non-weighted op, unless no integer kernel could form."""
    index = ctx.index
    every = node.op in ctx.target.all_inputs_ops
    indexes = range(len(node.inputs)) if every else [0]
    tensors = [(i, node.inputs[i]) for i in indexes if i < len(node.inputs) and node.inputs[i].name]
    if every and any(index.is_constant(t) for _, t in tensors):
        return [skip(node, "constant-operand",
                     "a constant operand is not quantized, so onnxruntime cannot form its "
                     f"QLinear{node.op} (it needs every input dequantized); Q/DQ around it would only add rounding")]
    tensors = [(i, t) for i, t in tensors if not index.is_constant(t)]
    if not tensors or not all(index.is_float(t) for _, t in tensors):
        return []
    kept = _kept_input(decided, node, [t.name for _, t in tensors])
    if kept is not None:
        return [kept]
    out = node.outputs[0] if node.outputs else None
    if out is not None and out.name in decided.kept_float:
        rule = decided.kept_float[out.name]
        return [skip(node, rule, f"its output is kept float by rule {rule}, so no integer kernel can form; "
                     "Q/DQ on its inputs would only add rounding")]
    return [*(Quantize(t.name, Role.ACTIVATION, ((node.name, i),), "ort-op-input") for i, t in tensors),
            QuantizedNode(node.name)]


def _op_output(ctx: Context, decided: Decided, node: gs.Node, out: gs.Tensor) -> Iterator[Proposal]:
    index = ctx.index
    if not index.is_float(out) or index.is_graph_output(out.name):
        return
    follower = index.single_consumer(out.name)
    if follower is not None and follower.op in CLIP_LIKE and follower.name not in ctx.excluded:
        if index.is_graph_output(follower.outputs[0].name) or follower.outputs[0].name in decided.kept_float:
            return
        yield QuantizedNode(follower.name)
        out = follower.outputs[0]
    if out.name in decided.kept_float:
        return
    users = tuple((n.name, i) for n, i in index.consumers.get(out.name, []))
    if users:
        yield Quantize(out.name, Role.ACTIVATION, users, "ort-op-output")


def rule_shared_scales(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """Concat inputs and output share one scale; pass-through ops reuse their input's scale.

    Only tensors the plan quantizes are grouped (the resolver leaves float ones out): equal scales let
    TensorRT (and onnxruntime) move Q/DQ through these ops and run them in int8 without requantizing.
    """
    for node in ctx.index.graph.nodes:
        if node.name in ctx.excluded:
            continue
        if node.op == "Concat":
            yield SameScale(tuple(t.name for t in list(node.inputs) + node.outputs[:1]))
        elif node.op in PASS_THROUGH and node.inputs and node.outputs:
            yield SameScale((node.inputs[0].name, node.outputs[0].name))
