"""Nodes the calibration data never ran: left in float, with a reason.

Why. A control-flow body runs only when its If branch is taken (a voice-activity model keeps one branch
per sample rate) or its Loop makes a trip. A planned activation inside it that the data never reached has
no statistics: its range would be a guess, and the quantized model would be wrong exactly on the inputs
calibration did not cover. So every node reading such an activation keeps all its inputs float (no weight
Q/DQ either: the node could not run in int8 anyway), and the plan says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from onnxq.records import QuantPlan, Skip


def drop_unrun(plan: QuantPlan, counts: Mapping[str, int], node_ops: Mapping[str, str]) -> QuantPlan:
    """``plan`` without the nodes reading a planned activation with ``counts[tensor] == 0`` (tensors not in
    ``counts`` are taken as observed); ``node_ops``: op type by node name, for the skips."""
    unseen = {s.tensor for s in plan.activations() if counts.get(s.tensor, 1) == 0}
    nodes = {node for s in plan.activations() if s.tensor in unseen for node, _ in s.consumers}
    if not nodes:
        return plan
    specs = []
    for s in plan.specs:
        consumers = tuple(c for c in s.consumers if c[0] not in nodes)
        if consumers:
            specs.append(dataclasses.replace(s, consumers=consumers))
    reason = ("the calibration data never ran it (an If branch not taken, a Loop without trips): no range "
              "to quantize with; left in float (give data that runs it)")
    skips = [*plan.skips, *(Skip(n, node_ops.get(n, ""), "not-run", reason) for n in sorted(nodes))]
    quantized = tuple(n for n in plan.quantized_nodes if n not in nodes)
    return dataclasses.replace(plan, specs=tuple(specs), skips=tuple(skips), quantized_nodes=quantized)
