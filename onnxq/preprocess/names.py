"""Give every node a unique, deterministic name.

Plans, reports, ``--exclude-node`` and the rewrite address nodes by name; exporters often leave names
empty or repeat them. Unnamed nodes become ``<OpType>_<k>`` in graph order; a repeated name gets a
``_<k>`` suffix. Named, unique nodes keep their names so user patterns keep matching. Names are unique model-wide:
nodes of control-flow bodies (nested too) are named in the same pass, after the top level's.
"""

from __future__ import annotations

import onnx

from onnxq.graph.names import UniqueNames, proto_graphs


def name_nodes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return a copy with unique node names and the number of nodes renamed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graphs = proto_graphs(out.graph)  # bodies too: plans address body nodes by name as well
    nodes = [node for g in graphs for node in g.node]
    names = UniqueNames(n.name for n in nodes if n.name)
    seen: set[str] = set()  # the first node of each name keeps it
    renamed = 0
    for node in nodes:
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        node.name = names.numbered(node.name or node.op_type)
        renamed += 1
    return out, renamed
