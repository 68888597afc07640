"""Light copies of a model: the same graph with its big initializers replaced by data-less stubs.

Why: serializing a model copies every weight, and the consumers that take bytes (onnx's shape
inference, onnxruntime's session) parse them back: ~1.5 ns per byte each way, 0.14 s per serialization
of a 90 MB transformer. Shape inference reads only dims and dtypes of big tensors, and onnxruntime can
take their values as arrays (``onnxq.runtime``). A stub is an external-data reference to a location
that does not exist, so nothing can read it by accident.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx


def stub(tensor: onnx.TensorProto, location: str) -> onnx.TensorProto:
    """``tensor``'s name, dtype and dims with an external-data reference to ``location`` instead of data."""
    out = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                           data_location=onnx.TensorProto.EXTERNAL)
    out.external_data.add(key="location", value=location)
    return out


def light_copy(
    model: onnx.ModelProto, stubbed: Callable[[onnx.TensorProto], bool], location: str
) -> onnx.ModelProto:
    """``model`` with every main-graph initializer for which ``stubbed`` is true replaced by a stub.

    Built without copying the weights: the graph is assembled from the original's parts. Nodes, inputs,
    outputs, value infos, opsets, functions and IR version are kept; metadata and doc strings are not
    (neither inference nor onnxruntime reads them). Subgraph initializers stay as they are.
    """
    return _assembled(model, model.graph.input,
                      [stub(t, location) if stubbed(t) else t for t in model.graph.initializer])


def weights_as_inputs(
    model: onnx.ModelProto, moved: Callable[[onnx.TensorProto], bool]
) -> onnx.ModelProto:
    """``model`` with every main-graph initializer for which ``moved`` is true declared as a graph input
    (name, dtype, dims) instead, for onnx's full checker.

    Why not a stub: the checker refuses an external-data reference to a file that does not exist. As
    inputs, the tensors still give shape inference their dtypes and dims, which is all the checker reads
    of big weights besides the size of their data (the caller moves only weights whose data has the size
    their dims say). Built like :func:`light_copy`, without copying the weights; the metadata is kept (the
    checker refuses duplicate keys).
    """
    g = model.graph
    declared = {vi.name for vi in g.input}
    kept, inputs = [], list(g.input)
    for t in g.initializer:
        if not moved(t):
            kept.append(t)
        elif t.name not in declared:  # old exporters list weights as inputs already
            inputs.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    light = _assembled(model, inputs, kept)
    light.metadata_props.extend(model.metadata_props)
    return light


def _assembled(model: onnx.ModelProto, inputs, initializers) -> onnx.ModelProto:
    """A model of ``model``'s nodes, outputs, value infos, opsets, functions and IR version with these
    main-graph ``inputs`` and ``initializers`` (copied as given: the big ones are stubs or left out)."""
    g = model.graph
    graph = onnx.helper.make_graph(g.node, g.name, inputs, g.output, initializer=initializers,
                                   value_info=g.value_info, sparse_initializer=g.sparse_initializer)
    out = onnx.helper.make_model(graph, opset_imports=model.opset_import, functions=model.functions)
    out.ir_version = model.ir_version
    return out
