"""Calibration graphs: the float model with planned tensors exposed as outputs.

Two forms. ``expose`` adds the tensors themselves as outputs (for histograms). ``add_range_outputs``
adds ReduceMin/ReduceMax (and Size) of each tensor inside the graph, so min-max calibration moves two
floats per tensor out of onnxruntime instead of whole activations. The float graph is not modified.
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


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def expose(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs also include ``tensors`` (already-outputs are not repeated)."""
    out = _copy(model)
    types = _elem_types(model)
    present = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in present:
            out.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
            present.add(name)
    return out


def range_output_names(tensor: str) -> tuple[str, str, str]:
    return f"{tensor}__onnxq_min", f"{tensor}__onnxq_max", f"{tensor}__onnxq_size"


def add_range_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` computing min, max and element count of each tensor as extra outputs."""
    out = _copy(model)
    types = _elem_types(model)
    for k, name in enumerate(tensors):
        lo, hi, size = range_output_names(name)
        elem = types.get(name, TensorProto.FLOAT)
        out.graph.node.extend([
            helper.make_node("ReduceMin", [name], [lo], name=f"onnxq_calib_min_{k}", keepdims=0),
            helper.make_node("ReduceMax", [name], [hi], name=f"onnxq_calib_max_{k}", keepdims=0),
            helper.make_node("Size", [name], [size], name=f"onnxq_calib_size_{k}"),
        ])
        out.graph.output.extend([
            helper.make_tensor_value_info(lo, elem, []),
            helper.make_tensor_value_info(hi, elem, []),
            helper.make_tensor_value_info(size, TensorProto.INT64, []),
        ])
    return out
