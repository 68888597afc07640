"""Read-only queries over an onnx-graphsurgeon graph, computed once into plain dicts.

Shapes are compared by what is known (:func:`same_shape`), never by symbolic names: shape inference
invents a fresh name (``unk__26``, ``unk__16``) for every dim it cannot follow, so the two inputs of a
residual Add may carry different names for one and the same batch dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.graph.ops import FLOAT_DTYPES


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """``model`` as an onnx-graphsurgeon graph, without graphsurgeon's own logging (it prints to stdout).

    A quantize run imports the preprocessed model once: every stage after that reads or changes this
    graph, and the result is exported once (``onnxq.rewrite.insert_qdq.export_model``).
    """
    with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.ERROR):
        return gs.import_onnx(model)


@dataclass(frozen=True)
class GraphIndex:
    """Producer and consumer maps of a graph, by tensor name, in graph (topological) order."""

    graph: gs.Graph
    tensors: dict[str, gs.Tensor]
    producer: dict[str, gs.Node]
    consumers: dict[str, list[tuple[gs.Node, int]]]
    order: dict[str, int]  # node name -> position

    @staticmethod
    def build(graph: gs.Graph) -> GraphIndex:
        producer: dict[str, gs.Node] = {}
        consumers: dict[str, list[tuple[gs.Node, int]]] = {}
        order: dict[str, int] = {}
        for pos, node in enumerate(graph.nodes):
            order[node.name] = pos
            for out in node.outputs:
                producer[out.name] = node
            for idx, inp in enumerate(node.inputs):
                if inp.name:
                    consumers.setdefault(inp.name, []).append((node, idx))
        return GraphIndex(graph, graph.tensors(), producer, consumers, order)

    def is_constant(self, tensor: gs.Tensor) -> bool:
        if isinstance(tensor, gs.Constant):
            return True
        node = self.producer.get(tensor.name)
        return node is not None and node.op == "Constant"

    def constant_value(self, tensor: gs.Tensor) -> np.ndarray | None:
        if isinstance(tensor, gs.Constant):
            return np.asarray(tensor.values)
        node = self.producer.get(tensor.name)
        if node is not None and node.op == "Constant" and "value" in node.attrs:
            return np.asarray(node.attrs["value"].values)
        return None

    def dtype(self, tensor: gs.Tensor) -> np.dtype | None:
        # A constant's dtype without loading its values: a loaded constant is exported re-serialized
        # (raw_data), one never loaded as it came (the model's bytes stay as they were).
        if tensor.dtype is None:
            return None
        try:
            return np.dtype(tensor.dtype)
        except TypeError:
            return None

    def is_float(self, tensor: gs.Tensor) -> bool:
        dt = self.dtype(tensor)
        return dt is not None and dt in FLOAT_DTYPES

    def is_graph_input(self, name: str) -> bool:
        return any(t.name == name for t in self.graph.inputs)

    def is_graph_output(self, name: str) -> bool:
        return any(t.name == name for t in self.graph.outputs)

    def single_consumer(self, name: str) -> gs.Node | None:
        users = self.consumers.get(name, [])
        return users[0][0] if len(users) == 1 and not self.is_graph_output(name) else None


Dim = int | str | None  # a gs shape entry: a known size, a symbolic name, or unknown


def _known(dim: Dim) -> int | None:
    if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 0:
        return int(dim)
    return None


def same_dim(a: Dim, b: Dim) -> bool:
    """Whether two dims can be the same size with no broadcast between them.

    Two known sizes must be equal. A symbolic or unknown dim can be any size, so it matches any known
    size except 1: a known 1 against an open dim is how a broadcast operand looks ([N,C,1,1] + [N,C,H,W]
    with symbolic H, W), so it is not counted as equal. Symbolic names are ignored (module doc).
    """
    ka, kb = _known(a), _known(b)
    if ka is not None and kb is not None:
        return ka == kb
    known = ka if ka is not None else kb
    return known != 1


def same_shape(a: Sequence[Dim] | None, b: Sequence[Dim] | None) -> bool:
    """Whether two tensor shapes can be equal elementwise (no broadcast), judged by known dims only.

    An unknown shape (``None``, rank unknown) contradicts nothing; different ranks are a broadcast.
    """
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(same_dim(x, y) for x, y in zip(a, b))
