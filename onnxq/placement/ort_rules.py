"""Placement rules of the onnxruntime CPU target that keep tensors in float where int8 only costs accuracy.

The ORT-CPU target quantizes inputs *and outputs* of every op with an integer kernel, so every Q/DQ it
adds is a rounding step. A Q/DQ pair pays for itself only where it lets onnxruntime run an integer kernel
(QLinearConv, QLinearAdd, ...) at a scale that represents the tensor well. The rules here mark the
tensors where neither holds with ``KeepFloat`` proposals, which beat any activation Q/DQ on them (see
``placement.resolve``).

* ``rule_integer_derived``: a float tensor computed only from integer graph inputs and constants and
  combined with data (an attention mask turned into 0 / -10000 / -3.4e38 additive biases, a 0/1
  padding mask) holds sentinels or exact small integers, not a distribution: one uint8 scale that covers
  -3.4e38 maps every real attention score to the same code (MiniLM: Spearman 82 -> 49). onnxruntime's
  and Model Optimizer's transformer recipes leave the mask path float too. Such a tensor is never
  quantized, an op that takes it as an operand stays float (its output mixes the sentinel in), and the
  sentinel is followed through data-movement ops.
* ``rule_output_tail``: a tensor that reaches the graph outputs only through data-movement ops (Concat,
  Reshape, Transpose, Slice...) has no integer consumer, so Q/DQ there buys no speed; and a detection
  head concatenates box offsets (tens) with sigmoid scores (0..1) into one tensor, where a shared uint8
  scale gives the scores a step of about 0.1 (YOLOX). The producer of such a tensor still reads
  quantized inputs (a weighted op keeps its Q/DQ inputs and its output stays float).
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx_graphsurgeon as gs

from onnxq.graph.ops import CLIP_LIKE, PASS_THROUGH, WEIGHTED
from onnxq.graph.query import GraphIndex
from onnxq.placement.proposals import Context, Decided, KeepFloat, Proposal, skip

# Ops whose float output is a lookup of float values (an embedding table): data, whatever the indices.
LOOKUPS = frozenset({"Gather", "GatherElements", "GatherND"})
# Ops whose outputs describe a tensor's shape, not its values.
METADATA = frozenset({"Shape", "Size"})
# Ops that only move values between positions (no arithmetic): a sentinel passes through them unchanged.
DATA_MOVEMENT = PASS_THROUGH | {"Concat"}
# Elementwise ops whose output keeps an operand's sentinel (scores + mask is still -3.4e38 where masked).
SENTINEL_KEEPING = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Max", "Min", "Neg", "Cast", "Clip"})
# Of those, the ones that inject a mask's values into data; hidden * padding mask is plain data again.
ADDITIVE = frozenset({"Add", "Sub", "Where", "Max", "Min"})


def data_tensors(index: GraphIndex) -> set[str]:
    """Names of the tensors whose values depend on float data: a float graph input or a float lookup.

    Everything else was computed from integer graph inputs, shapes and constants only.
    """
    graph = index.graph
    data = {t.name for t in graph.inputs if index.is_float(t)}
    for node in graph.nodes:
        if node.op in METADATA:
            continue
        lookup = node.op in LOOKUPS and node.inputs and index.is_float(node.inputs[0])
        if lookup or any(t.name in data for t in node.inputs if t.name):
            data.update(t.name for t in node.outputs)
    return data


def _integer_derived(index: GraphIndex, tensor: gs.Tensor, data: set[str]) -> bool:
    return bool(tensor.name) and index.is_float(tensor) and not index.is_constant(tensor) and tensor.name not in data


def _mask_operands(index: GraphIndex, node: gs.Node, data: set[str]) -> list[gs.Tensor]:
    """Integer-derived operands of an op that combines them with data: attention and padding masks."""
    if len(node.inputs) < 2 or not any(t.name in data for t in node.inputs):
        return []
    return [t for t in node.inputs if _integer_derived(index, t, data)]


def rule_integer_derived(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """ORT-CPU: masks computed from integer inputs, and what they are added to, stay float (module doc).

    A mask is a float tensor computed only from integer graph inputs and constants that an op combines
    with data (scores + mask, hidden * padding mask). A model fed a uint8 image has no data tensor in
    this sense (no float input, no float lookup): its integer-derived tensors never meet data, so it is
    quantized as usual. (Exported shapes are symbolic, so "broadcast onto data" cannot be tested.)
    """
    index = ctx.index
    data = data_tensors(index)
    sentinel: set[str] = set()  # tensors that carry a mask's sentinel values after arithmetic with it
    for node in index.graph.nodes:
        direct = _mask_operands(index, node, data)
        carried = [t for t in node.inputs if t.name in sentinel]
        if not direct and not carried:
            continue
        for t in direct + carried:
            yield KeepFloat(t.name, "integer-derived")
        if node.op in DATA_MOVEMENT or (node.op in SENTINEL_KEEPING and (carried or node.op in ADDITIVE)):
            sentinel.update(t.name for t in node.outputs[:1] if index.is_float(t))
        # a node with its own run-time quantization (placement.recurrent) keeps those operands float itself
        if node.op in DATA_MOVEMENT or node.op in METADATA or node.name in decided.quantized:
            continue
        what = (f"operand {direct[0].name!r} is a mask computed from integer inputs and constants only" if direct
                else f"operand {carried[0].name!r} carries values of a mask")
        yield skip(node, "integer-derived-operand",
                   f"{what} (sentinels such as -1e4 or -3.4e38, not a distribution): one uint8 scale cannot hold "
                   "it together with the data, left in float")
    for name in sentinel:
        yield KeepFloat(name, "integer-derived")


def rule_output_tail(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """ORT-CPU: tensors that reach graph outputs only through data-movement ops stay float (module doc)."""
    index = ctx.index
    tail = {t.name for t in index.graph.outputs}
    for node in reversed(index.graph.nodes):
        for out in node.outputs:
            users = index.consumers.get(out.name, [])
            if out.name in tail or not users:
                continue
            if all(u.op in DATA_MOVEMENT and all(o.name in tail for o in u.outputs) for u, _ in users):
                tail.add(out.name)
    for name in tail:
        yield KeepFloat(name, "output-tail")
    for node in index.graph.nodes:
        if node.op in DATA_MOVEMENT and node.outputs and all(o.name in tail for o in node.outputs):
            yield skip(node, "output-tail", "only moves values on their way to a graph output: no integer "
                       "consumer, so Q/DQ would add rounding for no speed; left in float")


# Normalizations divide by a statistic of their input: the channels a per-tensor scale crushes (a
# transformer residual stream has a few channels 100x larger than the rest) come back amplified.
NORMALIZATIONS = frozenset({"LayerNormalization", "InstanceNormalization", "GroupNormalization",
                            "RMSNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization"})


def rule_normalization_inputs(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """ORT-CPU: the data input of a normalization stays float, and so does the op producing it.

    onnxruntime has no integer LayerNormalization kernel, so Q/DQ there buys nothing; and a residual
    stream feeding LayerNorm has outlier channels two orders of magnitude above the rest (Bondarenko et
    al. 2021, "Understanding and overcoming the challenges of efficient transformer quantization"), which a
    uint8 per-tensor scale rounds away before the normalization rescales them. Model Optimizer and
    TensorRT keep LayerNorm patterns in float for the same reason.
    """
    for node in ctx.index.graph.nodes:
        if node.op in NORMALIZATIONS and node.inputs and ctx.index.is_float(node.inputs[0]):
            yield KeepFloat(node.inputs[0].name, "normalization-input")


def _reads_int8(ctx: Context, decided: Decided, skipped: set[str], tensor: str, depth: int = 0) -> bool:
    """Whether some consumer of ``tensor`` would read it through DequantizeLinear into an integer kernel."""
    if tensor in decided.kept_float:
        return False
    for node, idx in ctx.index.consumers.get(tensor, []):
        if node.name in skipped or node.name in ctx.excluded:
            continue
        if node.op in WEIGHTED and idx < 2:
            return True
        if node.op in CLIP_LIKE and depth < 4 and node.outputs:
            if _reads_int8(ctx, decided, skipped, node.outputs[0].name, depth + 1):
                return True
        elif node.op in ctx.target.quantized_ops and not _has_constant_operand(ctx, node):
            return True
    return False


def _has_constant_operand(ctx: Context, node: gs.Node) -> bool:
    return node.op in ctx.target.all_inputs_ops and any(
        t.name and ctx.index.is_constant(t) for t in node.inputs)


def rule_float_consumers(ctx: Context, decided: Decided) -> Iterator[Proposal]:
    """ORT-CPU: an op without weights runs in int8 only when an integer kernel reads its output.

    QLinearAdd, QLinearMul, QLinearSigmoid... save time only inside an integer chain; when every
    consumer runs in float the output is dequantized at once, so the op costs the same in float and its
    Q/DQ pairs only add rounding (a decomposed GELU, x * (1 + erf(x/sqrt 2)) * 0.5, loses 2 dB there).
    Decided in reverse graph order, so a chain of such ops leading into float ops stays float as a whole.
    """
    index = ctx.index
    skipped = set(decided.skipped)  # grows with this rule's own Skips: that is how a chain stays float
    for node in reversed(index.graph.nodes):
        if node.op in WEIGHTED or node.op not in ctx.target.quantized_ops or node.name in skipped:
            continue
        if node.name in ctx.excluded or not node.outputs or index.is_graph_output(node.outputs[0].name):
            continue
        if _has_constant_operand(ctx, node):
            continue  # rule_op_inputs_outputs leaves it float and says why
        out = node.outputs[0].name
        if (not index.is_float(node.outputs[0]) or out in decided.kept_float
                or _reads_int8(ctx, decided, skipped, out)):
            continue  # a kept-float output: rule_op_inputs_outputs skips the op with that rule's reason
        skipped.add(node.name)
        yield skip(node, "float-consumers", "every consumer of its output runs in float, so its integer kernel "
                   "would be dequantized at once: no speed gained, only rounding; left in float")
