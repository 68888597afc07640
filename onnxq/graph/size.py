"""Whether a model fits in one protobuf message (2 GB), without serializing it.

Why not ``model.ByteSize()``: with the upb protobuf backend it serializes the whole message (2.5 s for a
300 MB model) and raises EncodeError beyond 2 GB instead of returning the size, so the very models that
need the answer cannot get it. Tensor payloads dominate any real model, so their byte count decides;
only when it lands near the limit is the exact (slow) size asked for.
"""

from __future__ import annotations

import functools

import onnx
from google.protobuf.message import EncodeError

PROTOBUF_LIMIT = 2**31 - 1
_STRUCTURE_MARGIN = 256 * 2**20  # room for nodes, names, shapes and protobuf framing around the payloads


_HOLDERS = frozenset({onnx.AttributeProto.TENSOR, onnx.AttributeProto.TENSORS, onnx.AttributeProto.GRAPH,
                      onnx.AttributeProto.GRAPHS, onnx.AttributeProto.UNDEFINED})  # UNDEFINED: type not set


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type not in _HOLDERS:  # (one check per attribute: most are ints, floats, strings)
                continue
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from _tensors(sub)


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of data ``tensor`` holds in the message (0 for external data), from its dims and dtype.

    Never ``len(tensor.raw_data)``: upb copies the whole buffer to answer (a second per GB).
    """
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    if tensor.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    count = 1
    for d in tensor.dims:
        count *= max(int(d), 0)
    return count * _itemsize(tensor.data_type)


@functools.cache
def _itemsize(data_type: int) -> int:
    """Bytes per element (at least 1; 8 for an undefined or exotic type: assume the widest). Cached:
    onnx's lookup cost 10 us, and every size question asks it once per tensor."""
    try:
        return max(onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize, 1)
    except (KeyError, TypeError, ValueError):
        return 8


def payload_bytes(model: onnx.ModelProto) -> int:
    """Bytes of tensor data held inside the message (external data not counted)."""
    return sum(tensor_bytes(t) for t in _tensors(model.graph))


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
