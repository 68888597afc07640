"""Exposing tensors: a copy of a model with chosen tensors added as graph outputs.

The collector exposes the planned tensors (never every intermediate one) and reduces them in numpy (see
``onnxq.collect.collectors`` for why not ReduceMin/ReduceMax in the graph); comparison and bias correction
expose the tensors they read. The model itself is not modified. Tensors computed inside control-flow
bodies are routed out through their If/Loop/Scan (``onnxq.collect.routes``; :func:`exposure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxq.collect import routes


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


@dataclass(frozen=True)
class Exposure:
    """A model exposing ``tensors``: fetch ``outputs`` (one per tensor, in order) and read the values with
    :meth:`values`. A top-level tensor is its own output; a body tensor has a route."""

    model: onnx.ModelProto
    tensors: tuple[str, ...]
    outputs: tuple[str, ...]
    routes: dict[str, routes.Route] = field(default_factory=dict)

    def values(self, fetched: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each tensor's values from what onnxruntime returned for ``outputs``: a body tensor's over every
        execution of its body (empty when its If branch did not run)."""
        return [routes.unpack(v, self.routes.get(t)) for t, v in zip(self.tensors, fetched, strict=True)]


def exposure(model: onnx.ModelProto, tensors: Sequence[str]) -> Exposure:
    """``tensors`` exposed: top-level ones as graph outputs (:func:`expose`), body ones routed out."""
    routed, found = routes.route(model, list(tensors)) if _has_bodies(model) else (model, {})
    top = [t for t in tensors if t not in found]
    model = expose(routed, top)
    outputs = tuple(found[t].output if t in found else t for t in tensors)
    return Exposure(model, tuple(tensors), outputs, found)


def _has_bodies(model: onnx.ModelProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for node in model.graph.node for a in node.attribute)
