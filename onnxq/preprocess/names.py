"""Give every node a unique, deterministic name.

Plans, reports, ``--exclude-node`` and the rewrite address nodes by name; exporters often leave names
empty or repeat them. Unnamed nodes become ``<OpType>_<k>`` in graph order; a repeated name gets a
``_<k>`` suffix. Named, unique nodes keep their names so user patterns keep matching.
"""

from __future__ import annotations

import onnx


def name_nodes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return a copy with unique node names and the number of nodes renamed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    used = {n.name for n in out.graph.node if n.name}
    seen: set[str] = set()
    renamed = 0
    counters: dict[str, int] = {}
    for node in out.graph.node:
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or node.op_type
        k = counters.get(base, 0)
        candidate = f"{base}_{k}"
        while candidate in used or candidate in seen:
            k += 1
            candidate = f"{base}_{k}"
        counters[base] = k + 1
        node.name = candidate
        used.add(candidate)
        seen.add(candidate)
        renamed += 1
    return out, renamed
