"""Whether a model fits in one protobuf message (2 GB), without serializing it.

Why not ``model.ByteSize()``: with the upb protobuf backend it serializes the whole message (2.5 s for a
300 MB model) and raises EncodeError beyond 2 GB instead of returning the size, so the very models that
need the answer cannot get it. Tensor payloads dominate any real model, so their byte count decides;
only when it lands near the limit is the exact (slow) size asked for.
"""

from __future__ import annotations

import onnx
from google.protobuf.message import EncodeError

PROTOBUF_LIMIT = 2**31 - 1
_STRUCTURE_MARGIN = 256 * 2**20  # room for nodes, names, shapes and protobuf framing around the payloads


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from _tensors(sub)


def payload_bytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data held inside the message (external data not counted)."""
    total = 0
    for t in _tensors(model.graph):
        total += len(t.raw_data) + sum(len(s) for s in t.string_data)
        total += 4 * (len(t.float_data) + len(t.int32_data)) + 8 * (len(t.int64_data) + len(t.double_data)
                                                                    + len(t.uint64_data))
    return total


def fits_protobuf(model: onnx.ModelProto) -> bool:
    """Whether ``model`` serializes to at most 2 GB (so in-memory onnx and onnxruntime APIs can take it)."""
    payload = payload_bytes(model)
    if payload > PROTOBUF_LIMIT:
        return False
    if payload + _STRUCTURE_MARGIN < PROTOBUF_LIMIT:
        return True
    try:
        return model.ByteSize() <= PROTOBUF_LIMIT
    except EncodeError:
        return False
