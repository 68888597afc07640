"""Shape inference: record the shape and dtype of every intermediate tensor in ``value_info``.

Why: placement needs dtypes to keep integer and shape-computation tensors out of quantization,
constant folding needs static shapes to fold ``Shape`` nodes, and the collector needs ranks to
reduce per-channel statistics. ``data_prop=True`` propagates the values of small shape tensors
(Shape -> Gather -> Concat -> Reshape), so a Reshape whose target shape is computed in the graph still
gets a static output shape.

Inference is best effort (``strict_mode=False``): an op onnx cannot infer (a custom domain) leaves its
outputs unknown instead of failing. The in-memory API serializes the model, so models over the 2 GB
protobuf limit are returned unchanged; the caller records that in its notes.
"""

from __future__ import annotations

import logging

import onnx

from onnxq.graph.size import PROTOBUF_LIMIT, fits_protobuf  # noqa: F401 (PROTOBUF_LIMIT re-exported)

logger = logging.getLogger(__name__)

def fits_in_memory_api(model: onnx.ModelProto) -> bool:
    """Whether ``model`` can go through onnx's in-memory (serializing) APIs: under 2 GB."""
    return fits_protobuf(model)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with inferred ``value_info``; ``model`` itself when it cannot be done."""
    if not fits_in_memory_api(model):
        logger.warning("model over 2 GB: shape inference skipped")
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as exc:
        # Non-strict inference still raises on contradictions (a value_info that disagrees with an op).
        logger.warning("shape inference failed, continuing without it: %s", str(exc).splitlines()[0])
        return model
