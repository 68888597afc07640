"""Exposing tensors: a copy of a model with chosen tensors added as graph outputs.

The collector exposes the planned tensors (never every intermediate one) and reduces them in numpy (see
``onnxq.collect.collectors`` for why not ReduceMin/ReduceMax in the graph); comparison and bias correction
expose the tensors they read. The model itself is not modified.
"""

from __future__ import annotations

import onnx


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def expose(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs also include ``tensors`` (already-outputs are not repeated).

    Each new output declares the element type the model records for it and no shape; a tensor whose type
    the model does not record is declared without one, and onnxruntime infers it (integer and float alike).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types = _elem_types(model)
    present = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in present:
            output = out.graph.output.add()
            output.name = name
            if name in types:
                output.type.tensor_type.elem_type = types[name]
            present.add(name)
    return out
