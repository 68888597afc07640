"""The resolver: merge the proposals of a target's rules into one QuantPlan.

Rules run in the target's order (``TargetSpec.rules``). Each gets the decisions of the rules before it
as an immutable ``Decided`` snapshot, and its proposals are merged before the next rule runs. The
precedence, all of it here:

1. User exclusions win. A rule that would quantize an excluded node proposes a ``user-exclude`` Skip
   instead; and a QuantizedNode for an excluded node is dropped, whichever rule proposes it.
2. The first Skip of a node wins (earlier rule first, then the rule's own order): its rule and reason
   are the ones the plan shows. A Skip does not undo a QuantizedNode: rules read ``decided.skipped``
   before quantizing a node.
3. KeepFloat beats Quantize for activations, in whichever order they come: an activation Q/DQ is
   dropped when any rule keeps the tensor float. Weights and biases are not affected. The first
   KeepFloat of a tensor names the rule.
4. Quantize proposals for one (tensor, role, axis) merge into one spec: the first names the rule and
   ``bias_of``; the consumers of all of them are united, in proposal order.
5. SameScale groups join the quantized activations among their tensors; groups that share a tensor
   merge. A group is named after its member that comes first in the graph; a lone member has no group.
6. Every node neither quantized nor skipped is skipped as ``not-a-quantized-op``, with the target's
   reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType

from onnxq.placement.proposals import (
    Context,
    Decided,
    KeepFloat,
    Proposal,
    Quantize,
    QuantizedNode,
    Rule,
    SameScale,
)
from onnxq.records import QuantPlan, Role, Skip, TensorQuantSpec

_Key = tuple[str, Role, int | None]


def resolve(ctx: Context, rules: Iterable[Rule]) -> QuantPlan:
    """Run ``rules`` in order on ``ctx`` and merge their proposals into a QuantPlan (module doc)."""
    merged = _Merged(ctx)
    for rule in rules:
        decided = merged.decided()
        for proposal in rule(ctx, decided):
            merged.add(proposal)
    return merged.plan()


@dataclass
class _Merged:
    """The resolver's running state; only ``resolve`` holds one, rules see ``Decided`` snapshots."""

    ctx: Context
    specs: dict[_Key, Quantize] = field(default_factory=dict)  # first proposal per key, in arrival order
    consumers: dict[_Key, list[tuple[str, int]]] = field(default_factory=dict)
    skips: dict[str, Skip] = field(default_factory=dict)
    kept_float: dict[str, str] = field(default_factory=dict)
    quantized: set[str] = field(default_factory=set)
    same_scale: list[tuple[str, ...]] = field(default_factory=list)

    def decided(self) -> Decided:
        kept_float = MappingProxyType(dict(self.kept_float))
        return Decided(frozenset(self.skips), kept_float, frozenset(self.quantized))

    def add(self, p: Proposal) -> None:
        if isinstance(p, Quantize):
            key = (p.tensor, p.role, p.axis)
            self.specs.setdefault(key, p)
            merged = self.consumers.setdefault(key, [])
            for c in p.consumers:
                if c not in merged:
                    merged.append(c)
        elif isinstance(p, Skip):
            self.skips.setdefault(p.node, p)
        elif isinstance(p, KeepFloat):
            self.kept_float.setdefault(p.tensor, p.rule)
        elif isinstance(p, QuantizedNode):
            if p.node not in self.ctx.excluded:
                self.quantized.add(p.node)
        elif isinstance(p, SameScale):
            self.same_scale.append(p.tensors)
        else:
            raise TypeError(f"not a placement proposal: {p!r}")

    def plan(self) -> QuantPlan:
        index, target = self.ctx.index, self.ctx.target
        order = {name: i for i, name in enumerate(index.tensors)}
        keys = [k for k in self.specs if not (k[1] is Role.ACTIVATION and k[0] in self.kept_float)]
        activations = [t for t, role, _ in keys if role is Role.ACTIVATION]
        groups = _group_names(activations, self.same_scale, order)
        specs = []
        for key in sorted(keys, key=lambda k: (order.get(k[0], 0), k[1].value, k[2] or 0)):
            p = self.specs[key]
            if p.role is Role.ACTIVATION:
                dtype, symmetric = target.activation_dtype, target.activation_symmetric
            else:
                dtype, symmetric = ("int8" if p.role is Role.WEIGHT else "int32"), True
            specs.append(TensorQuantSpec(
                tensor=p.tensor, role=p.role, dtype=dtype, symmetric=symmetric,
                consumers=tuple(self.consumers[key]), rule=p.rule, axis=p.axis,
                group=groups.get(p.tensor) if p.role is Role.ACTIVATION else None, bias_of=p.bias_of,
            ))
        for node in index.graph.nodes:
            if node.name not in self.quantized and node.name not in self.skips:
                reason = target.not_quantized_reason.format(op=node.op)
                self.skips[node.name] = Skip(node.name, node.op, "not-a-quantized-op", reason)
        skips = sorted(self.skips.values(), key=lambda s: index.order.get(s.node, 0))
        quantized = sorted(self.quantized, key=lambda n: index.order.get(n, 0))
        return QuantPlan(target.name, tuple(specs), tuple(skips), tuple(quantized))


def _group_names(
    activations: list[str], same_scale: list[tuple[str, ...]], order: dict[str, int]
) -> dict[str, str]:
    """Shared-scale group name of each grouped activation (precedence 5): union-find over the groups."""
    quantized = set(activations)
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    for tensors in same_scale:
        members = [t for t in tensors if t in quantized]
        for other in members[1:]:  # a tensor in parent has been joined to another: no group of one
            ra, rb = find(members[0]), find(other)
            if ra != rb:
                parent[rb] = ra
                parent.setdefault(ra, ra)
    by_root: dict[str, list[str]] = {}
    for t in activations:
        if t in parent:
            by_root.setdefault(find(t), []).append(t)
    return {t: min(ms, key=lambda m: order.get(m, 0)) for ms in by_root.values() for t in ms}
