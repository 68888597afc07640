"""Shape inference: record the shape and dtype of every intermediate tensor in ``value_info``.

Why: placement needs dtypes to keep integer and shape-computation tensors out of quantization,
constant folding needs static shapes to fold ``Shape`` nodes, and the collector needs ranks to
reduce per-channel statistics. ``data_prop=True`` propagates the values of small shape tensors
(Shape -> Gather -> Concat -> Reshape), so a Reshape whose target shape is computed in the graph still
gets a static output shape.

Inference is best effort (``strict_mode=False``): an op onnx cannot infer (a custom domain) leaves its
outputs unknown instead of failing. The in-memory API serializes the model, which cannot exceed 2 GB:
a larger model is inferred on a light copy whose big initializers are stubs (dims and dtype only, which
is all inference reads), and the inferred types are put on the full model. Without this, every
intermediate tensor of a large model would have an unknown dtype and placement would skip its ops.
"""

from __future__ import annotations

import logging

import onnx

from onnxq.graph.size import PROTOBUF_LIMIT, fits_protobuf, tensor_bytes  # noqa: F401 (PROTOBUF_LIMIT re-exported)

logger = logging.getLogger(__name__)


def fits_in_memory_api(model: onnx.ModelProto) -> bool:
    """Whether ``model`` can go through onnx's in-memory (serializing) APIs: under 2 GB."""
    return fits_protobuf(model)


def _light_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """What inference reads of ``model``: initializers over 1 MB become stubs (name, dtype, dims)."""
    g = model.graph
    initializers = []
    for tensor in g.initializer:
        if tensor_bytes(tensor) > 2**20:
            stub = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                    data_location=onnx.TensorProto.EXTERNAL)
            stub.external_data.add(key="location", value="__onnxq_shape_inference_stub__")
            tensor = stub
        initializers.append(tensor)
    graph = onnx.helper.make_graph(g.node, g.name, g.input, g.output, initializer=initializers,
                                   value_info=g.value_info)
    light = onnx.helper.make_model(graph, opset_imports=model.opset_import, functions=model.functions)
    light.ir_version = model.ir_version
    return light


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with inferred ``value_info``; ``model`` itself when it cannot be done."""
    target = model if fits_in_memory_api(model) else _light_copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            target, check_type=False, strict_mode=False, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        # Non-strict inference still raises on contradictions (a value_info that disagrees with an op).
        logger.warning("shape inference failed, continuing without it: %s", str(exc).splitlines()[0])
        return model
    if target is model:
        return inferred
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for field in ("value_info", "output"):
        del getattr(out.graph, field)[:]
        getattr(out.graph, field).extend(getattr(inferred.graph, field))
    return out
