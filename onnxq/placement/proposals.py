"""What placement rules return, and what they read.

A rule is a function ``rule(context, decided) -> Iterable[Proposal]``. It reads the graph and the
target (``Context``) and, where it depends on what the rules before it decided, the resolver's
snapshot of those decisions (``Decided``); it writes no shared state. ``placement.resolve`` merges the
proposals of a target's rules, in the target's order, into the QuantPlan, with its precedence stated
in one place. So a rule can be read, tested and reordered on its own, and a plan can be explained by
the proposals that made it.

A node left in float is proposed as :class:`onnxq.records.Skip` itself (node, op type, rule, reason):
the proposal and the plan entry are the same record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

from onnxq.config import WeightSpec
from onnxq.graph.query import GraphIndex
from onnxq.records import Role, Skip

if TYPE_CHECKING:  # targets.py lists the rules, which take a Context: a type only, no import cycle
    from onnxq.placement.targets import TargetSpec


@dataclass(frozen=True)
class Quantize:
    """Q/DQ on ``tensor``, read by the ``consumers`` edges (node name, input index)."""

    tensor: str
    role: Role
    consumers: tuple[tuple[str, int], ...]
    rule: str
    axis: int | None = None
    bias_of: tuple[str, str] | None = None  # (activation, weight) whose scales multiply into an int32 bias's


@dataclass(frozen=True)
class KeepFloat:
    """No activation Q/DQ on ``tensor``, whichever rule proposes one; ``rule`` is the reason shown."""

    tensor: str
    rule: str


@dataclass(frozen=True)
class QuantizedNode:
    """``node`` runs as an integer kernel (or is fused into one): it gets no "not-a-quantized-op" skip."""

    node: str


@dataclass(frozen=True)
class SameScale:
    """The quantized activations among ``tensors`` share one scale; float ones have none to share."""

    tensors: tuple[str, ...]


Proposal = Quantize | KeepFloat | Skip | QuantizedNode | SameScale


@dataclass(frozen=True)
class Context:
    """What every rule reads: the graph, the target, the weight options and the user's exclusions."""

    index: GraphIndex
    target: TargetSpec
    weights: WeightSpec
    excluded: Mapping[str, str]  # node name -> why the user excluded it


@dataclass(frozen=True)
class Decided:
    """The resolver's decisions after the rules before this one: what a rule may build on."""

    skipped: frozenset[str]  # nodes with a Skip
    kept_float: Mapping[str, str]  # tensor -> the rule that keeps it float
    quantized: frozenset[str]  # nodes with a QuantizedNode


Rule = Callable[[Context, Decided], Iterable[Proposal]]


def skip(node: gs.Node, rule: str, reason: str) -> Skip:
    """A Skip proposal for ``node``."""
    return Skip(node.name, node.op, rule, reason)


def user_exclude(ctx: Context, node: gs.Node) -> Skip:
    """The Skip a rule proposes instead of quantizing a node the user excluded."""
    return skip(node, "user-exclude", ctx.excluded[node.name])
