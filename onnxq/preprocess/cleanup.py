"""Cleanup: fold constant subgraphs, turn Constant nodes into initializers, drop Identity and dead nodes.

Why: exporters leave shape arithmetic in the graph (``Shape -> Gather -> Unsqueeze -> Concat ->
Reshape``), weights behind ``Constant`` nodes, ``Identity`` chains and unused branches. None of it
should be quantized, and left in place it hides the real structure from placement (a weight behind an
Identity is not seen as a constant, a Reshape fed by a computed shape is not seen as pass-through).

How: onnx-graphsurgeon's ``fold_constants`` evaluates every node whose inputs are all constant with
onnxruntime (CPU) and replaces its outputs by initializers; with ``fold_shapes`` it also folds
``Shape`` of tensors whose shape is static, so shapes are inferred first. Dynamic dimensions are never
folded. Some nodes are never folded even when their inputs are constant:

- random ops and Dropout: folding would freeze one random draw into the model;
- ops outside the standard domains: onnxruntime cannot evaluate custom ops, and one failure would
  stop the whole folding run;
- ops that expand data (Expand, Tile, ConstantOfShape, Range) when their output is known to exceed
  1 MiB: folding would bloat the model file with a tensor that is cheap to compute.

QuantizeLinear/DequantizeLinear are never folded (graphsurgeon's own rule), so an already-quantized
weight keeps its Q/DQ. Graph input and output names never change: an Identity that produces a graph
output is removed only by renaming its producer's output, and unused graph inputs are kept.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.preprocess import _gs
from onnxq.preprocess.shapes import infer_shapes

logger = logging.getLogger(__name__)

RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
    | {"Dropout"}
)
EXPANDING_OPS = frozenset({"Expand", "Tile", "ConstantOfShape", "Range"})
FOLDABLE_DOMAINS = frozenset({None, "", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
MAX_EXPANDED_BYTES = 1 << 20


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a cleaned copy of ``model``: constants folded, Identity and dead nodes removed."""
    if len(model.graph.sparse_initializer):
        logger.warning("model has sparse initializers, which onnx-graphsurgeon cannot read: cleanup skipped")
        return model
    graph = _gs.to_graph(infer_shapes(model))
    try:
        with _gs.quiet_gs():
            graph.fold_constants(
                fold_shapes=True,
                recurse_subgraphs=False,  # graphsurgeon does not pass should_exclude_node to subgraphs
                error_ok=True,
                should_exclude_node=_never_fold,
            )
    except Exception as exc:  # noqa: BLE001 - folding is an optimisation; graphsurgeon crashes on malformed
        # graphs (an If without branches, ...). Go on unfolded: the validity check downstream names the flaw.
        logger.warning("constant folding failed, continuing without it: %s: %s", type(exc).__name__,
                       str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        graph = _gs.to_graph(model)
    with _gs.quiet_gs():
        graph.cleanup()
        remove_identities(graph)
        graph.cleanup().toposort()
    return _gs.to_model(graph, like=model)


def _never_fold(node: gs.Node) -> bool:
    """Nodes that must stay in the graph even when all their inputs are constant."""
    if node.op in RANDOM_OPS or node.domain not in FOLDABLE_DOMAINS:
        return True
    if node.op in EXPANDING_OPS:
        return any(_known_bytes(t) > MAX_EXPANDED_BYTES for t in node.outputs)
    return False


def _known_bytes(tensor: gs.Tensor) -> int:
    """Size of ``tensor`` in bytes when its shape and dtype are static, else 0."""
    shape, dtype = tensor.shape, tensor.dtype
    if shape is None or dtype is None or any(not isinstance(d, int) or d < 0 for d in shape):
        return 0
    count = 1
    for d in shape:
        count *= d
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:  # a dtype numpy does not know (bfloat16, float8): at most 8 bytes
        itemsize = 8
    return count * itemsize


def remove_identities(graph: gs.Graph) -> gs.Graph:
    """Bypass Identity nodes in place (they become dead and ``cleanup`` drops them); returns ``graph``.

    An Identity is kept when its output is read inside a subgraph, or when it produces a graph output
    whose name cannot move to the producer (the input is a graph input, output or initializer).
    """
    top_level = {id(node) for node in graph.nodes}
    output_names = {t.name for t in graph.outputs}
    input_names = {t.name for t in graph.inputs}
    for node in list(graph.nodes):
        if node.op != "Identity" or not _gs.is_default_domain(node):
            continue
        if len(node.inputs) != 1 or len(node.outputs) != 1:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if any(id(consumer) not in top_level for consumer in dst.outputs):
            continue
        if dst.name in output_names:
            _rename_producer_output(node, src, dst, input_names | output_names)
        else:
            _bypass(node, src, dst)
    return graph


def _bypass(node: gs.Node, src: gs.Tensor, dst: gs.Tensor) -> None:
    for consumer in list(dst.outputs):
        for index, tensor in enumerate(consumer.inputs):
            if tensor is dst:
                consumer.inputs[index] = src
    node.inputs.clear()
    node.outputs.clear()


def _rename_producer_output(node: gs.Node, src: gs.Tensor, dst: gs.Tensor, interface: set[str]) -> None:
    """Make ``src``'s producer write ``dst`` directly, when nothing else reads ``src``."""
    if isinstance(src, gs.Constant) or src.name in interface or len(src.inputs) != 1 or len(src.outputs) != 1:
        return
    producer = src.inputs[0]
    index = next(i for i, t in enumerate(producer.outputs) if t is src)
    node.inputs.clear()
    node.outputs.clear()
    producer.outputs[index] = dst
