"""Calibration graphs: the float model with planned tensors exposed as extra graph outputs.

Only the planned tensors are exposed (never every intermediate one), and the float graph itself is not
modified: the collector reads them straight from onnxruntime and reduces them in numpy (see
``onnxq.collect.collectors`` for why not ReduceMin/ReduceMax in the graph).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


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
    """A copy of ``model`` whose outputs also include ``tensors`` (already-outputs are not repeated)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types = _elem_types(model)
    present = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in present:
            elem = types.get(name, TensorProto.FLOAT)
            out.graph.output.append(helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    return out
