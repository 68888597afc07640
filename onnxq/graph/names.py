"""Fresh names for the nodes and tensors a pass adds: the one generator every pass uses.

Why. A name must be unique in its graph: onnxruntime and the checker refuse two producers of one
tensor, and plans, reports and ``--exclude-node`` address nodes by name. It must also be deterministic
(derived from the graph and the order of requests, never from ids or hashes), so that quantizing the
same model twice writes the same bytes. Names read like what they come from (``<t>_q``,
``<w>_bn_folded``), with a numeric suffix only when the plain name is taken.

Two schemes:

- :meth:`UniqueNames.new`: ``base``, else ``base_1``, ``base_2``, ... (passes adding tensors and nodes).
- :meth:`UniqueNames.numbered`: always suffixed, ``base_0``, ``base_1``, ... with a counter per base
  (``preprocess.names`` naming unnamed and repeated nodes ``<OpType>_<k>``).

Every name handed out is taken from then on, by either scheme.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
import onnx_graphsurgeon as gs

from onnxq.graph.scopes import walk


class UniqueNames:
    """Hands out names not in ``taken`` nor handed out before."""

    def __init__(self, taken: Iterable[str] = ()):
        self._taken = set(taken)
        self._next: dict[str, int] = {}  # numbered(): the next suffix to try per base

    @classmethod
    def of_graph(cls, graph: gs.Graph, *, node_names: bool = True) -> UniqueNames:
        """Avoiding the tensor names of ``graph`` and of its control-flow bodies, nested too (ONNX names are
        unique model-wide: a body may read any enclosing scope's tensor) and, with ``node_names``, their
        node names."""
        taken: set[str] = set()
        for scope in walk(graph):
            taken.update(scope.graph.tensors())
            if node_names:
                taken.update(n.name for n in scope.graph.nodes)
        return cls(taken)

    @classmethod
    def of_proto(cls, graph: onnx.GraphProto, *, node_names: bool = True) -> UniqueNames:
        """Avoiding every tensor name of ``graph`` and of its subgraphs, nested too (node inputs and outputs,
        initializers, graph inputs and outputs) and, with ``node_names``, their node names."""
        taken: set[str] = set()
        for g in proto_graphs(graph):
            taken.update(n for node in g.node for n in (*node.input, *node.output))
            taken.update(t.name for t in g.initializer)
            taken.update(v.name for v in (*g.input, *g.output))
            if node_names:
                taken.update(n.name for n in g.node)
        return cls(taken)

    def __contains__(self, name: object) -> bool:
        return name in self._taken

    def new(self, base: str) -> str:
        """``base`` if free, else the first free ``base_1``, ``base_2``, ...; taken from now on."""
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name

    def numbered(self, base: str) -> str:
        """The first free ``base_<k>``, ``k`` counting from 0 per base across calls; taken from now on."""
        k = self._next.get(base, 0)
        while f"{base}_{k}" in self._taken:
            k += 1
        self._next[base] = k + 1
        name = f"{base}_{k}"
        self._taken.add(name)
        return name


def proto_graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every subgraph in its nodes' attributes, nested too, depth-first in node order."""
    out = [graph]
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                out.extend(proto_graphs(sub))
    return out
