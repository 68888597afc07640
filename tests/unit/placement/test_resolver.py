"""The placement resolver's precedence (onnxq/placement/resolve.py), one test per rule of it.

Rules here are hand-written functions returning fixed proposals on a tiny graph, so each test shows
one precedence: breaking it changes the plan the test expects.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import onnx_graphsurgeon as gs
import pytest

from onnxq.config import WeightSpec
from onnxq.graph.query import GraphIndex
from onnxq.placement import ORT_CPU, TENSORRT
from onnxq.placement.proposals import Context, Decided, KeepFloat, Quantize, QuantizedNode, SameScale
from onnxq.placement.resolve import resolve
from onnxq.records import Role, Skip
from onnxq.testing import model_from_text

# Nodes: Conv_0 (x, W) -> a; Relu_0 (a) -> r; Concat_0 (r, x) -> c; Transpose_0 (c) -> y
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,4,4] x) => (float[1,8,4,4] y) {
  a = Conv <pads=[1,1,1,1]> (x, W)
  r = Relu (a)
  c = Concat <axis=1> (r, x)
  y = Transpose <perm=[0,1,3,2]> (c)
}
"""


@pytest.fixture(scope="module")
def index() -> GraphIndex:
    model = model_from_text(TEXT, weights={"W": (4, 4, 3, 3)})
    return GraphIndex.build(gs.import_onnx(model))


def context(index: GraphIndex, target=TENSORRT, excluded: dict[str, str] | None = None) -> Context:
    return Context(index, target, WeightSpec(), MappingProxyType(excluded or {}))


def proposing(*proposals):
    """A rule that ignores the graph and returns ``proposals``."""
    return lambda ctx, decided: list(proposals)


def act(tensor: str, node: str, idx: int, rule: str = "r") -> Quantize:
    return Quantize(tensor, Role.ACTIVATION, ((node, idx),), rule)


def specs(plan):
    return {(s.tensor, s.role): s for s in plan.specs}


def skips(plan):
    return {s.node: s for s in plan.skips}


def test_node_names_of_the_graph(index):
    assert [n.name for n in index.graph.nodes] == ["Conv_0", "Relu_0", "Concat_0", "Transpose_0"]


def test_a_quantized_node_the_user_excluded_is_dropped(index):
    ctx = context(index, excluded={"Conv_0": "op type Conv excluded by --exclude-op"})
    plan = resolve(ctx, [proposing(QuantizedNode("Conv_0"), QuantizedNode("Relu_0"))])
    assert plan.quantized_nodes == ("Relu_0",)
    assert skips(plan)["Conv_0"].rule == "not-a-quantized-op"


def test_first_skip_of_a_node_wins_across_and_within_rules(index):
    first = proposing(Skip("Relu_0", "Relu", "a", "why a"), Skip("Relu_0", "Relu", "b", "why b"))
    later = proposing(Skip("Relu_0", "Relu", "c", "why c"), Skip("Concat_0", "Concat", "c", "why c"))
    plan = resolve(context(index), [first, later])
    assert (skips(plan)["Relu_0"].rule, skips(plan)["Relu_0"].reason) == ("a", "why a")
    assert skips(plan)["Concat_0"].rule == "c"


def test_a_skip_does_not_undo_a_quantized_node(index):
    rules = [proposing(QuantizedNode("Relu_0")), proposing(Skip("Relu_0", "Relu", "s", "x"))]
    plan = resolve(context(index), rules)
    assert plan.quantized_nodes == ("Relu_0",)
    assert skips(plan)["Relu_0"].rule == "s"


@pytest.mark.parametrize("keep_first", [True, False])
def test_keep_float_beats_an_activation_quantize_in_either_order(index, keep_first):
    keep = proposing(KeepFloat("r", "keeper"))
    quant = proposing(act("r", "Concat_0", 0), act("x", "Conv_0", 0))
    plan = resolve(context(index), [keep, quant] if keep_first else [quant, keep])
    assert set(specs(plan)) == {("x", Role.ACTIVATION)}


def test_keep_float_does_not_touch_weights_and_biases(index):
    rule = proposing(
        KeepFloat("W", "keeper"),
        Quantize("W", Role.WEIGHT, (("Conv_0", 1),), "w", axis=0),
        Quantize("W", Role.BIAS, (("Conv_0", 2),), "b", axis=0, bias_of=("x", "W")),
    )
    assert set(specs(resolve(context(index), [rule]))) == {("W", Role.WEIGHT), ("W", Role.BIAS)}


def test_first_keep_float_names_the_rule_later_rules_see(index):
    seen = []

    def reader(ctx, decided):
        seen.append(dict(decided.kept_float))
        return []

    resolve(context(index), [proposing(KeepFloat("r", "first"), KeepFloat("r", "second")),
                             proposing(KeepFloat("r", "third")), reader])
    assert seen == [{"r": "first"}]


def test_quantize_proposals_of_one_key_merge_first_rule_and_bias_of_win(index):
    rule = proposing(
        Quantize("x", Role.ACTIVATION, (("Conv_0", 0),), "one"),
        Quantize("x", Role.ACTIVATION, (("Concat_0", 1), ("Conv_0", 0)), "two"),
        Quantize("W", Role.BIAS, (("Conv_0", 2),), "b1", axis=0, bias_of=("x", "W")),
        Quantize("W", Role.BIAS, (("Conv_0", 2),), "b2", axis=0, bias_of=("r", "W")),
    )
    later = proposing(Quantize("x", Role.ACTIVATION, (("Relu_0", 0),), "three"))
    plan = resolve(context(index), [rule, later])
    x = specs(plan)["x", Role.ACTIVATION]
    assert x.rule == "one" and x.consumers == (("Conv_0", 0), ("Concat_0", 1), ("Relu_0", 0))
    bias = specs(plan)["W", Role.BIAS]
    assert (bias.rule, bias.bias_of) == ("b1", ("x", "W"))


def test_one_weight_with_two_axes_is_two_specs(index):
    rule = proposing(Quantize("W", Role.WEIGHT, (("Conv_0", 1),), "w", axis=0),
                     Quantize("W", Role.WEIGHT, (("Conv_0", 1),), "w", axis=None))
    assert [s.axis for s in resolve(context(index), [rule]).weights()] == [0, None]


def test_same_scale_groups_quantized_activations_and_names_the_first_in_graph_order(index):
    rule = proposing(act("r", "Concat_0", 0), act("x", "Concat_0", 1), act("c", "Transpose_0", 0),
                     SameScale(("r", "x", "c")))
    plan = resolve(context(index), [rule])
    assert {s.tensor: s.group for s in plan.activations()} == {"x": "x", "r": "x", "c": "x"}


def test_same_scale_leaves_float_tensors_out_and_they_join_nothing(index):
    # "r" is float: it must not bridge x and c, and a group of one is no group
    rule = proposing(act("x", "Conv_0", 0), act("c", "Transpose_0", 0),
                     SameScale(("x", "r")), SameScale(("r", "c")))
    plan = resolve(context(index), [rule])
    assert {s.tensor: s.group for s in plan.activations()} == {"x": None, "c": None}


def test_same_scale_groups_sharing_a_tensor_merge(index):
    rule = proposing(act("x", "Conv_0", 0), act("r", "Concat_0", 0), act("c", "Transpose_0", 0),
                     SameScale(("c", "r")), SameScale(("r", "x")))
    assert {s.group for s in resolve(context(index), [rule]).activations()} == {"x"}


def test_same_scale_sees_keep_float(index):
    rule = proposing(act("r", "Concat_0", 0), act("c", "Transpose_0", 0),
                     SameScale(("r", "c")), KeepFloat("c", "k"))
    assert {s.tensor: s.group for s in resolve(context(index), [rule]).activations()} == {"r": None}


@pytest.mark.parametrize("target", [TENSORRT, ORT_CPU], ids=lambda t: t.name)
def test_nodes_neither_quantized_nor_skipped_get_the_targets_reason(index, target):
    rule = proposing(QuantizedNode("Conv_0"), Skip("Relu_0", "Relu", "s", "x"))
    plan = resolve(context(index, target), [rule])
    assert [(s.node, s.rule) for s in plan.skips] == [
        ("Relu_0", "s"), ("Concat_0", "not-a-quantized-op"), ("Transpose_0", "not-a-quantized-op")]
    assert skips(plan)["Concat_0"].reason == target.not_quantized_reason.format(op="Concat")
    assert plan.target == target.name


@pytest.mark.parametrize("target", [TENSORRT, ORT_CPU], ids=lambda t: t.name)
def test_dtypes_come_from_the_role_and_the_target(index, target):
    rule = proposing(act("x", "Conv_0", 0), Quantize("W", Role.WEIGHT, (("Conv_0", 1),), "w", axis=0),
                     Quantize("W", Role.BIAS, (("Conv_0", 2),), "b", axis=0, bias_of=("x", "W")))
    got = {s.role: (s.dtype, s.symmetric) for s in resolve(context(index, target), [rule]).specs}
    assert got == {Role.ACTIVATION: (target.activation_dtype, target.activation_symmetric),
                   Role.WEIGHT: ("int8", True), Role.BIAS: ("int32", True)}


def test_plan_entries_follow_graph_order_not_proposal_order(index):
    names = ["Transpose_0", "Concat_0", "Relu_0", "Conv_0"]
    quantized = proposing(*map(QuantizedNode, names), act("c", "Transpose_0", 0), act("x", "Conv_0", 0))
    skipped = proposing(*(Skip(n, n.split("_")[0], "s", "x") for n in names))
    plan = resolve(context(index), [quantized, skipped])
    assert plan.quantized_nodes == tuple(reversed(names))
    assert [s.tensor for s in plan.specs] == ["x", "c"]
    assert [s.node for s in plan.skips] == list(reversed(names))


def test_each_rule_sees_the_decisions_before_it_never_its_own_nor_later_ones(index):
    seen: list[Decided] = []

    def first(ctx, decided):
        seen.append(decided)
        yield Skip("Relu_0", "Relu", "s", "x")
        yield QuantizedNode("Conv_0")
        seen.append(decided)  # still the snapshot from before this rule

    def second(ctx, decided):
        seen.append(decided)
        return [KeepFloat("r", "k")]

    resolve(context(index), [first, second])
    assert seen[0] == seen[1] == Decided(frozenset(), MappingProxyType({}), frozenset())
    assert (seen[2].skipped, seen[2].quantized, dict(seen[2].kept_float)) == ({"Relu_0"}, {"Conv_0"}, {})
    with pytest.raises(TypeError):
        seen[2].kept_float["r"] = "mutated"  # type: ignore[index]


def test_an_unknown_proposal_is_an_error(index):
    with pytest.raises(TypeError, match="not a placement proposal"):
        resolve(context(index), [proposing("Conv_0")])


def test_rules_read_the_target_as_data_not_its_name(index):
    """A target renamed plans the same: no rule branches on ``target.name``."""
    from onnxq.placement.targets import TargetSpec

    for target in (TENSORRT, ORT_CPU):
        renamed: TargetSpec = dataclasses.replace(target, name="renamed")
        want = resolve(context(index, target), target.rules)
        got = resolve(context(index, renamed), target.rules)
        assert dataclasses.replace(got, target=target.name) == want
