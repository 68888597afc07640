"""Exporting an onnx-graphsurgeon graph to a model, copying each weight once.

Why: ``gs.export_onnx`` builds a GraphProto (``make_graph`` copies every initializer into it) and then a
ModelProto (``make_model`` copies the whole graph again): two copies of the weights per export, 0.1 s
each for a 90 MB transformer, and protobuf has no move. Here the big constants of the main graph are
exported as data-less stubs, and each stub is then overwritten in the finished model by its tensor: one
copy. The result is the same message, field for field, as ``gs.export_onnx`` makes (tested).
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from onnxq.graph.light import stub

SWAP_MIN_BYTES = 4 << 10  # smaller constants are cheaper to copy twice than to swap
_STUB_LOCATION = "__onnxq_export_stub__"


def export_onnx(graph: gs.Graph, do_type_check: bool = True) -> onnx.ModelProto:
    """``gs.export_onnx(graph, do_type_check=...)`` with one copy of each big main-graph constant."""
    swapped: dict[str, tuple[gs.Constant, object, onnx.TensorProto]] = {}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and not isinstance(tensor._values, SparseValues) \
                and tensor._values.nbytes >= SWAP_MIN_BYTES:
            proto = OnnxExporter.export_tensor_proto(tensor)  # what the exporter would copy in
            swapped[tensor.name] = (tensor, tensor._values, proto)
    try:
        for tensor, _, proto in swapped.values():
            tensor._values = LazyValues(stub(proto, _STUB_LOCATION))
        model = gs.export_onnx(graph, do_type_check=do_type_check)
    finally:
        for tensor, values, _ in swapped.values():
            tensor._values = values
    for initializer in model.graph.initializer:
        if initializer.name in swapped:
            initializer.CopyFrom(swapped[initializer.name][2])
    return model
