"""The scopes of a graph: the top-level graph and the bodies of its If/Loop/Scan nodes, nested too.

Why. Real work lives in control-flow bodies (a voice-activity model runs its whole network inside the
branches of an If on the sample rate). Placement, collection and the rewrite handle one scope at a time
with the same code as at top level; this module says which scopes there are and how they nest.

ONNX names are SSA across the model: a body may read tensors of any enclosing scope by name (outer-scope
references) and never redefines them, so a tensor name identifies one tensor model-wide, and onnxq's
node names are unique model-wide too (``preprocess.names``). onnx-graphsurgeon imports a body as a
``gs.Graph`` in the node's attributes whose outer-scope references are the enclosing graph's tensor
objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class Scope:
    """One graph of the model: the top level (``owner`` None) or body ``attr`` of control-flow node
    ``owner`` inside ``parent``. ``path`` is ``""`` at top level, else e.g. ``If_0/then_branch``."""

    graph: gs.Graph
    path: str = ""
    owner: gs.Node | None = None
    attr: str | None = None
    parent: Scope | None = None

    def node_path(self, node: gs.Node) -> str:
        """``node``'s name qualified by this scope's path (``If_0/then_branch/Conv_3``)."""
        return f"{self.path}/{node.name}" if self.path else node.name

    def chain(self) -> list[Scope]:
        """The scopes from the top level down to this one (this one last)."""
        out: list[Scope] = []
        scope: Scope | None = self
        while scope is not None:
            out.append(scope)
            scope = scope.parent
        return out[::-1]


def bodies(node: gs.Node) -> list[tuple[str, gs.Graph]]:
    """The subgraph attributes of ``node`` (name, graph), in attribute order."""
    return [(name, value) for name, value in node.attrs.items() if isinstance(value, gs.Graph)]


def walk(graph: gs.Graph) -> list[Scope]:
    """Every scope of ``graph``: the top level first, then each body depth-first in node order."""
    top = Scope(graph)
    return [top, *_below(top)]


def _below(scope: Scope) -> Iterator[Scope]:
    for node in scope.graph.nodes:
        for attr, body in bodies(node):
            inner = Scope(body, f"{scope.node_path(node)}/{attr}", node, attr, scope)
            yield inner
            yield from _below(inner)


def has_bodies(graph: gs.Graph) -> bool:
    """Whether any node of ``graph`` holds a subgraph."""
    return any(bodies(node) for node in graph.nodes)


def owners(graph: gs.Graph) -> dict[str, Scope]:
    """The scope defining each tensor name: where it is a graph input or node output; a constant belongs
    to the outermost scope that reads it (an outer-scope initializer read only in a body is still visible
    there, and an initializer of a body is read nowhere else)."""
    out: dict[str, Scope] = {}
    for scope in walk(graph):  # outer scopes come first: setdefault keeps the outermost
        for t in scope.graph.inputs:
            out.setdefault(t.name, scope)
        for node in scope.graph.nodes:
            for t in node.outputs:
                if t.name:
                    out.setdefault(t.name, scope)
            for t in node.inputs:
                if isinstance(t, gs.Constant) and t.name:
                    out.setdefault(t.name, scope)
    return out


def all_tensors(graph: gs.Graph) -> dict[str, gs.Tensor]:
    """Every tensor of every scope by name (``gs.Graph.tensors()`` covers one scope)."""
    out: dict[str, gs.Tensor] = {}
    for scope in walk(graph):
        for name, tensor in scope.graph.tensors().items():
            out.setdefault(name, tensor)
    return out


def all_nodes(graph: gs.Graph) -> dict[str, gs.Node]:
    """Every node of every scope by name (names are unique model-wide after preprocessing)."""
    return {node.name: node for scope in walk(graph) for node in scope.graph.nodes}


def node_scopes(graph: gs.Graph) -> dict[str, Scope]:
    """The scope of each node, by node name."""
    return {node.name: scope for scope in walk(graph) for node in scope.graph.nodes}


def node_paths(graph: gs.Graph) -> dict[str, str]:
    """Each node's name qualified by its scope path (top-level nodes keep their plain names)."""
    return {node.name: scope.node_path(node) for scope in walk(graph) for node in scope.graph.nodes}
