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

import itertools
import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.preprocess import _gs
from onnxq.preprocess.shapes import inferred_light, with_inferred

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
    inferred = inferred_light(model)
    if inferred is not None and _already_clean(inferred.graph) and not model.functions:
        return _level_sorted(model)  # what graphsurgeon would return, without its round trip (below)
    out = _round_trip(model, inferred, _never_fold)
    if _well_formed(out.graph):
        return out
    # graphsurgeon inlined an If whose condition became constant by folding a Shape, and lost producers of
    # the branch's outputs (Silero VAD's op15 and half exports: an LSTM-cell branch holding a nested If; its
    # If inlining ignores should_exclude_node). Folding without shapes keeps such conditions dynamic.
    logger.info("constant folding left a node reading a tensor nothing produces; folding again without shapes")
    kept_ifs = _round_trip(model, inferred, _never_fold, fold_shapes=False)
    if _well_formed(kept_ifs.graph):
        return kept_ifs
    logger.warning("constant folding broke the graph (a node reads a tensor nothing produces); continuing "
                   "without it")
    return out if not _well_formed(model.graph) else model  # the validity check downstream names the flaw


def _round_trip(model: onnx.ModelProto, inferred: onnx.ModelProto | None, exclude,
                fold_shapes: bool = True) -> onnx.ModelProto:
    """graphsurgeon's fold, cleanup and sort of ``model`` (``exclude``: nodes never folded)."""
    graph = _gs.to_graph(with_inferred(model, inferred))
    try:
        with _gs.quiet_gs():
            graph.fold_constants(
                fold_shapes=fold_shapes,
                recurse_subgraphs=False,  # graphsurgeon does not pass should_exclude_node to subgraphs
                error_ok=True,
                should_exclude_node=exclude,
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


# graphsurgeon's rules (Graph.fold_constants, fold_shapes=True): never-folded ops, ops whose Casts it elides
_GS_NO_FOLD = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_GS_CAST_ELISION = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater", "Less", "Concat"})


def _already_clean(graph: onnx.GraphProto) -> bool:
    """Whether folding and cleanup would change nothing in ``graph`` (shapes inferred) but the node order.

    Why: graphsurgeon's round trip (import, fold, cleanup, export) costs 60 ms on EfficientNet-Lite0 and
    0.2 s on MiniLM, most often to change nothing. Conservative: anything graphsurgeon might act on (a
    Constant or Identity node, a node with only constant inputs, a Shape whose value is partly static where
    it is read, a Cast it could elide, a dead node or output, an unused initializer, a subgraph) answers
    False, and the round trip runs. ``tests/unit/preprocess/test_cleanup_shortcut.py`` holds both ways to each other.
    """
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return False
    constants = {t.name: t for t in graph.initializer}
    available = set(constants) | {vi.name for vi in graph.input}
    producer: dict[str, onnx.NodeProto] = {}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in ("Constant", "Identity") or any(name not in available for name in inputs):
            return False  # (an input not yet produced: not in order, graphsurgeon sorts it)
        foldable = node.op_type not in _GS_NO_FOLD and node.op_type not in RANDOM_OPS and \
            node.domain in FOLDABLE_DOMAINS
        if foldable and all(name in constants for name in inputs):
            return False
        if node.op_type in _GS_CAST_ELISION and any(
                name in producer and producer[name].op_type == "Cast" for name in inputs):
            return False
        for name in inputs:
            readers.setdefault(name, []).append(node)
        for name in node.output:
            if name:
                producer[name] = node
                available.add(name)
    outputs = {vi.name for vi in graph.output}
    if any(name not in readers for name in constants):
        return False  # an unused initializer: cleanup drops it
    if any(name and name not in readers and name not in outputs for n in graph.node for name in n.output):
        return False  # a dead node or an unread output
    shapes = {vi.name: vi.type.tensor_type for vi in (*graph.input, *graph.value_info, *graph.output)}
    return not any(n.op_type == "Shape" and _shape_folds(n, shapes, readers, constants) for n in graph.node)


def _shape_folds(node: onnx.NodeProto, shapes, readers, constants) -> bool:
    """Whether graphsurgeon could fold (part of) ``node``'s Shape value: the whole shape static, or a
    Gather of static dims with constant indices; any Slice of it counts as foldable (conservative)."""
    ttype = shapes.get(node.input[0])
    if ttype is None or not ttype.HasField("shape"):
        return False
    dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    if all(d is not None for d in dims):
        return True
    for reader in readers.get(node.output[0], []):
        if reader.op_type == "Slice":
            return True
        if reader.op_type == "Gather" and reader.input[0] == node.output[0]:
            indices = constants.get(reader.input[1]) if len(reader.input) > 1 else None
            if indices is None:
                continue
            try:
                picked = np.atleast_1d(onnx.numpy_helper.to_array(indices)).astype(np.int64)
                if all(dims[int(k)] is not None for k in picked):
                    return True
            except (IndexError, ValueError):
                return True  # (graphsurgeon's own attempt decides)
    return False


def _level_sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy with its nodes in graphsurgeon's topological order: stably sorted by level (a
    node's level is one more than its highest producer's, 0 without one), as ``Graph.toposort`` does."""
    level: dict[str, int] = {}
    levels = []
    for node in model.graph.node:
        k = max([level.get(name, -1) for name in node.input if name] + [-1]) + 1
        levels.append(k)
        level.update({name: k for name in node.output if name})
    if all(a <= b for a, b in itertools.pairwise(levels)):
        return model
    order = sorted(range(len(levels)), key=levels.__getitem__)
    nodes = [model.graph.node[i] for i in order]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _well_formed(graph: onnx.GraphProto, outer: frozenset[str] = frozenset()) -> bool:
    """Every node input produced before it (or an input, initializer, or outer-scope name), in bodies too,
    and every graph output produced: what a fold must never break."""
    defined = set(outer) | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        if any(name and name not in defined for name in node.input):
            return False
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            if any(not _well_formed(body, frozenset(defined)) for body in bodies):
                return False
        defined.update(name for name in node.output if name)
    return all(o.name in defined for o in graph.output)


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
