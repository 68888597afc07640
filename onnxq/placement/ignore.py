"""User ignore rules: node-name regular expressions and op types. They always win over placement rules."""

from __future__ import annotations

import re
from collections.abc import Iterable

import onnx_graphsurgeon as gs

from onnxq.errors import ConfigError


def compile_patterns(patterns: Iterable[str]) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"--exclude-node {pattern!r} is not a valid regular expression: {exc}") from None
    return compiled


def excluded_nodes(
    graph: gs.Graph, node_patterns: Iterable[str], op_types: Iterable[str]
) -> dict[str, str]:
    """Map of excluded node name -> reason.

    Patterns are searched (``re.search``) in node names, so ``/head/.*`` matches ``/model/head/conv``
    and ``model\\.104\\.(.*)`` matches ``model.104.conv``; anchor with ``^``/``$`` for exact names.
    """
    patterns = compile_patterns(node_patterns)
    ops = set(op_types)
    out: dict[str, str] = {}
    for node in graph.nodes:
        if node.op in ops:
            out[node.name] = f"op type {node.op} excluded by --exclude-op"
            continue
        for pattern in patterns:
            if pattern.search(node.name):
                out[node.name] = f"name matches --exclude-node {pattern.pattern!r}"
                break
    return out
