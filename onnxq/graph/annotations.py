"""Shape annotations (``value_info``) of a model, in every scope: which tensors carry one, and keeping
only a given set.

Why. Preprocessing infers the shape of every intermediate tensor for onnxq's own analysis, and the
export writes them all into ``value_info``. onnxruntime's graph optimizer reads those annotations: its
SkipLayerNormFusion fuses ``Add -> LayerNormalization`` into com.microsoft.SkipLayerNormalization when
both Add inputs carry the same symbolic shape, and that contrib kernel is slower on CPU than the two
nodes it replaces (onnxruntime 1.32, [1, 64, 384] float, one thread: 134 us against 25 us for Add +
LayerNormalization; on MiniLM-L6 12 fused sites instead of the 6 on quantize_dynamic's output made
onnxq's dynamic model 1 ms slower: benchmarks/results/dynamic_speed.md). A model onnxq writes for
onnxruntime's own kernels (dynamic mode) therefore keeps only the annotations its input model had:
onnxruntime then optimizes it as it would the float model.
"""

from __future__ import annotations

import onnx

from onnxq.graph.names import proto_graphs


def annotated(model: onnx.ModelProto) -> frozenset[str]:
    """The names of the tensors ``model`` has a ``value_info`` for, in any scope."""
    return frozenset(vi.name for g in proto_graphs(model.graph) for vi in g.value_info)


def keep_annotations(model: onnx.ModelProto, names: frozenset[str]) -> int:
    """Drop, in place and in every scope, the ``value_info`` entries of tensors not in ``names``;
    returns how many were dropped. Graph inputs and outputs keep their types (they are not value_info)."""
    dropped = 0
    for g in proto_graphs(model.graph):
        kept = [vi for vi in g.value_info if vi.name in names]
        dropped += len(g.value_info) - len(kept)
        if len(kept) != len(g.value_info):
            del g.value_info[:]
            g.value_info.extend(kept)
    return dropped
