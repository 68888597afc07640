"""Which names a graph reads: the test for dead initializers.

Why it matters: onnxruntime drops initializers that nothing reads when it resolves a graph, so a name
handed to it separately (``SessionOptions.add_external_initializers``) that the graph never reads makes
the session fail to load ("Failed to find existing initializer"). Rewrites must therefore not leave
initializers behind, and the session helper must hand onnxruntime only the ones that are read.
"""

from __future__ import annotations

import onnx


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies, recursively), in graph order."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                nodes.extend(all_nodes(sub))
    return nodes


def read_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of ``graph`` or of any subgraph (If, Loop, Scan bodies, recursively) reads as
    an input, plus the outputs of ``graph`` and of its subgraphs (an output may name an initializer
    directly). A subgraph may read its enclosing scopes' initializers by name, so all scopes count."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(i for i in node.input if i)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= read_names(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    names |= read_names(sub)
    return names


def unused_initializers(model: onnx.ModelProto) -> list[str]:
    """Names of main-graph initializers nothing reads (see :func:`read_names`), in graph order."""
    read = read_names(model.graph)
    return [t.name for t in model.graph.initializer if t.name not in read]


def drop_unread(graph: onnx.GraphProto, candidates: set[str]) -> list[str]:
    """Remove, in place, the initializers named in ``candidates`` that nothing in ``graph`` reads any
    more (and their graph-input entries, for models that list weights as inputs); returns their names.

    For a pass that rewired some readers away from a tensor: only the tensors it touched are candidates,
    so the pass never removes what it did not orphan.
    """
    read = read_names(graph)
    dead = [t.name for t in graph.initializer if t.name in candidates and t.name not in read]
    if not dead:
        return []
    gone = set(dead)
    # Deleted by index, from the back: rebuilding the field would copy every kept weight.
    for field in (graph.initializer, graph.input):
        for k in reversed([k for k, t in enumerate(field) if t.name in gone]):
            del field[k]
    return dead
