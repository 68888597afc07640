"""A "gated" QDQ model: each quantized node switches between its float and fake-quantized form by feed.

Sensitivity analysis evaluates the model under many quantization subsets (one layer quantized, all but
one, the steps of the greedy fallback). Building and loading an onnxruntime session per subset costs
more than running it, so the model is built once with a switch per *unit* (a quantized node of the plan):

    gates: bool[K] graph input                         one entry per unit, in ``units`` order
    g_k = Gather(gates, k)                             a bool scalar
    y   = If(g_k) then N(DQ(Q(x)), DQ(Q(w)))          the node with its planned inputs fake-quantized
                  else N(x, w)                         the node as in the float model

Why the whole node goes into the ``If``, measured on EfficientNet-Lite0 (CPU ms per image, 1 thread):
gating each input edge (``If`` or ``Where`` on the edge) hides the weights behind a runtime value, so
onnxruntime cannot pre-pack them into its blocked (NCHWc) convolution layout and every run costs as much
as an unoptimized session (~30-35 ms); a node-level ``If`` keeps constant weights in both branches, the
branches are optimized like any graph (~15-19 ms, float alone ~12 ms), and a branch that is not taken
costs nothing. ``Where`` would also compute Q, DQ and the select whatever the gate.

Weights (and int32 biases) are fake-quantized once in numpy into a constant of the quantized branch,
bit for bit what the written model computes (:func:`onnxq.formats.fake_quantize_as`, the arithmetic of
onnxruntime's QuantizeLinear and DequantizeLinear). When bias correction is on, the
quantized branches carry the corrected biases (:class:`QuantForm`). With every gate on, the outputs are
those of :func:`onnxq.rewrite.insert_qdq` with the same plan and parameters; with every gate off, those of
the float model (tested for every subset on small graphs). Graph optimizations that fuse Q/DQ into
integer kernels must stay off (:func:`onnxq.runtime.make_session` with ``fake_quant=True``). A planned
edge into a node that is not a unit (ORT-CPU quantizes a unit's output for float readers too) is
switched by the gate of the unit that produces it; one whose tensor no unit produces is quantized
unconditionally.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.config import QuantConfig, Target, WeightFormat
from onnxq.formats import fake_quantize_as, int_format
from onnxq.graph.export import export_onnx
from onnxq.graph.names import UniqueNames
from onnxq.graph.query import GraphIndex
from onnxq.graph.scopes import Scope, all_nodes, node_scopes
from onnxq.records import QuantParams, QuantPlan, Role, TensorQuantSpec
from onnxq.rewrite.insert_qdq import _copy_model_fields

GATES_INPUT = "onnxq_gates"


@dataclass(frozen=True)
class GatedModel:
    """The gated model, the unit order of its ``gates`` input and, per unit, the top-level node its ``If``
    lies in (the ``If`` itself, or the If/Loop/Scan whose body holds it)."""

    model: onnx.ModelProto
    units: tuple[str, ...]
    gates_input: str = GATES_INPUT
    if_nodes: tuple[str, ...] = ()

    def feed(self, quantized: Iterable[str]) -> dict[str, np.ndarray]:
        """The gates feed that quantizes exactly the units in ``quantized`` (the others run in float)."""
        on = set(quantized)
        unknown = on - set(self.units)
        if unknown:
            raise KeyError(f"not units of the gated model: {sorted(unknown)[:3]}")
        return {self.gates_input: np.array([u in on for u in self.units], dtype=bool)}


def prequantized_weights(config: QuantConfig) -> bool:
    """Whether :func:`onnxq.api.quantize` writes int8 weights (``dq_only``) rather than float -> Q -> DQ."""
    return config.weights.format is WeightFormat.DQ_ONLY or config.target is Target.ORT_CPU


@dataclass(frozen=True)
class Corrections:
    """What bias correction changed, per node: constant inputs (``(node, index) -> value``) and, for a
    MatMul whose bias lives in the following Add, the amount added to its output (``node -> delta``)."""

    inputs: dict[tuple[str, int], np.ndarray]
    after: dict[str, np.ndarray]


def corrections(model: onnx.ModelProto, corrected: onnx.ModelProto) -> Corrections:
    """The differences of ``corrected`` (``model`` after bias correction, same node names) from ``model``."""
    graph_a, graph_b = gs.import_onnx(model), gs.import_onnx(corrected)
    scopes_a, scopes_b = node_scopes(graph_a), node_scopes(graph_b)  # nodes of bodies too
    nodes_b = all_nodes(graph_b)
    indexes: dict[int, GraphIndex] = {}

    def index(scope: Scope) -> GraphIndex:
        return indexes.setdefault(id(scope.graph), GraphIndex.build(scope.graph))

    inputs: dict[tuple[str, int], np.ndarray] = {}
    after: dict[str, np.ndarray] = {}
    for node in all_nodes(graph_a).values():
        other = nodes_b.get(node.name)
        if other is None:
            continue
        a, b = index(scopes_a[node.name]), index(scopes_b[node.name])
        for i in range(2, len(other.inputs)):
            new = b.constant_value(other.inputs[i]) if other.inputs[i].name else None
            old = a.constant_value(node.inputs[i]) if i < len(node.inputs) and node.inputs[i].name else None
            if new is not None and (old is None or not np.array_equal(old, new)):
                inputs[(node.name, i)] = new
        if node.op == "MatMul":
            delta = _add_delta(a, b, node)
            if delta is not None:
                after[node.name] = delta
    return Corrections(inputs, after)


def _add_delta(a: GraphIndex, b: GraphIndex, node: gs.Node) -> np.ndarray | None:
    users_a, users_b = a.consumers.get(node.outputs[0].name, []), b.consumers.get(node.outputs[0].name, [])
    if len(users_a) != 1 or len(users_b) != 1 or users_a[0][0].op != "Add":
        return None
    (add_a, i), (add_b, _) = users_a[0], users_b[0]
    old, new = a.constant_value(add_a.inputs[1 - i]), b.constant_value(add_b.inputs[1 - i])
    if old is None or new is None or np.array_equal(old, new):
        return None
    return (new.astype(np.float64) - old.astype(np.float64)).astype(old.dtype)


@dataclass(frozen=True)
class QuantForm:
    """How ``insert_qdq`` will write the model, so the gated model computes the same thing: ``dq_only``
    weights (int8 initializers) and ``corrected``, the float model after bias correction (or None)."""

    dq_only: bool = False
    corrected: onnx.ModelProto | None = None


def build_gated(
    model: onnx.ModelProto, plan: QuantPlan, params: dict[str, QuantParams], units: Sequence[str] | None = None,
    *, form: QuantForm | None = None,
) -> GatedModel:
    """The gated model of ``plan`` with a gate per unit (default: every node of ``plan.quantized_nodes``).

    ``model`` is the preprocessed float model the plan was made for; it is not modified. ``form.dq_only``
    as for :func:`onnxq.rewrite.insert_qdq` (int8 weights quantized in numpy, or float weights quantized
    by QuantizeLinear in the graph): the weights are fake-quantized the same way, bit for bit.
    ``form.corrected``: ``model`` after bias correction (what ``insert_qdq`` rewrites when it is on); the
    quantized branches then use its biases, the float branches the original ones. A MatMul's correction
    of the following Add is added inside its quantized branch instead (equal up to float rounding).
    """
    form = form or QuantForm()
    dq_only = form.dq_only
    fix = corrections(model, form.corrected) if form.corrected is not None else Corrections({}, {})
    units = tuple(plan.quantized_nodes if units is None else units)
    graph = gs.import_onnx(model)
    scope_of = node_scopes(graph)  # units inside If/Loop/Scan bodies are gated in their own body
    nodes = all_nodes(graph)
    missing = [u for u in units if u not in nodes]
    if missing:
        raise KeyError(f"units not in the graph: {missing[:3]}")
    indexes: dict[int, GraphIndex] = {}

    def index_of(name: str) -> GraphIndex:
        body = scope_of[name].graph
        return indexes.setdefault(id(body), GraphIndex.build(body))

    producers = {t.name: n for n in nodes.values() for t in n.outputs}
    names = UniqueNames.of_graph(graph)
    gates = gs.Variable(names.new(GATES_INPUT), dtype=np.bool_, shape=[len(units)])
    graph.inputs.append(gates)
    edges: dict[str, list[tuple[int, TensorQuantSpec]]] = {}
    for spec in plan.specs:
        for node_name, idx in spec.consumers:
            edges.setdefault(node_name, []).append((idx, spec))
    unit_index = {unit: k for k, unit in enumerate(units)}
    made: dict[tuple[int, int], gs.Variable] = {}

    def gate(unit: str, where: str) -> gs.Variable:
        """Unit ``unit``'s gate as a tensor of the scope of node ``where``: each scope reads the gates
        input (a graph input, visible in every body) itself, so no gate crosses a scope boundary."""
        body = scope_of[where].graph
        key = (id(body), unit_index[unit])
        if key not in made:
            made[key] = _gate(body, names, gates, unit_index[unit])
        return made[key]

    shared: dict[tuple[str, str], gs.Variable] = {}  # (spec key, gate) -> the gated Q/DQ output
    for node_name, node_edges in edges.items():
        if node_name not in units:
            gate_of = {u: gate(u, node_name) for u in _producing_units(node_edges, producers, unit_index)}
            _quantize_non_unit(scope_of[node_name].graph, names, index_of(node_name), nodes[node_name],
                               node_edges, params, gate_of, shared, dq_only, fix, producers)
    gated_ifs = [_gate_node(scope_of[unit].graph, names, index_of(unit), nodes[unit], edges.get(unit, []),
                            params, gate(unit, unit), dq_only, fix) for unit in units]
    # the top-level node each unit's If lies in: its own If at top level, else the If/Loop/Scan holding the
    # body it lies in (what onnxq.rewrite.segments cuts at)
    if_nodes = tuple(name if scope_of[unit].owner is None else _top_level(scope_of[unit]).name
                     for unit, name in zip(units, gated_ifs))
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = export_onnx(graph, do_type_check=True)
    _copy_model_fields(model, out)
    return GatedModel(out, units, gates.name, if_nodes)


def _gate(graph: gs.Graph, names: UniqueNames, gates: gs.Variable, k: int) -> gs.Variable:
    index = gs.Constant(names.new(f"onnxq_gate_index_{k}"), np.array(k, np.int64))
    out = gs.Variable(names.new(f"onnxq_gate_{k}"), dtype=np.bool_, shape=[])
    graph.nodes.append(gs.Node("Gather", names.new(f"onnxq_gate_{k}_Gather"), inputs=[gates, index], outputs=[out]))
    return out


def _producing_units(node_edges: list[tuple[int, TensorQuantSpec]], producers: dict[str, gs.Node],
                     unit_index: dict[str, int]) -> list[str]:
    """The units producing the tensors of ``node_edges`` (in any scope)."""
    found = (producers.get(spec.tensor) for _, spec in node_edges)
    return [p.name for p in found if p is not None and p.name in unit_index]


def _top_level(scope: Scope) -> gs.Node:
    """The top-level node whose body (nested or not) is ``scope``."""
    while scope.parent is not None and scope.parent.owner is not None:
        scope = scope.parent
    assert scope.owner is not None, "a body scope has an owner"
    return scope.owner


def _quantize_non_unit(graph: gs.Graph, names: UniqueNames, index: GraphIndex, node: gs.Node,
                       node_edges: list[tuple[int, TensorQuantSpec]], params: dict[str, QuantParams],
                       gate_of: dict[str, gs.Variable], shared: dict[tuple[str, str], gs.Variable],
                       dq_only: bool, fix: Corrections, producers: dict[str, gs.Node]) -> None:
    """Quantize the planned edges of ``node``, which is not a unit (a node the plan leaves float).

    The ORT-CPU target quantizes a unit's output for every reader, float readers included (an excluded
    Add after a quantized Conv reads DQ(Q(conv))): such an edge exists because its producer is
    quantized, so the producer's gate switches it (``If(gate) then DQ(Q(t)) else t``), and with every
    gate off the model is the float one. Edges whose tensor no unit produces (a constant, or a subset of
    ``units`` given by the caller) are quantized unconditionally, as ``insert_qdq`` would.
    """
    gated, fixed = [], []
    for idx, spec in node_edges:
        producer = producers.get(spec.tensor)
        gate = gate_of.get(producer.name) if producer is not None else None
        (gated if gate is not None and spec.role is Role.ACTIVATION else fixed).append((idx, spec, gate))
    inputs, extra = _quantized_inputs(names, index, node, [(i, s) for i, s, _ in fixed], params, dq_only, fix)
    graph.nodes.extend(extra)
    for idx, spec, gate in gated:
        key = (spec.key, gate.name)
        if key not in shared:
            shared[key] = _gated_qdq(graph, names, index.tensors[spec.tensor], params[spec.key], gate)
        inputs[idx] = shared[key]
    # A gs node's input list keeps each tensor's ``outputs`` in sync and has no slice assignment
    # (``node.inputs[:] = ...`` fails): replace it through clear and extend.
    node.inputs.clear()
    node.inputs.extend(inputs)
    if node.name in fix.after:
        graph.nodes.append(_shifted(names, node, fix.after[node.name]))


def _gated_qdq(graph: gs.Graph, names: UniqueNames, tensor: gs.Tensor, p: QuantParams,
               gate: gs.Variable) -> gs.Variable:
    """``If(gate) then DQ(Q(tensor)) else tensor``: one activation edge switched by a unit's gate."""
    q_nodes, dq_out = _qdq(names, tensor, p)
    kept = gs.Variable(names.new(f"{tensor.name}_float"), dtype=tensor.dtype, shape=tensor.shape)
    identity = gs.Node("Identity", names.new(f"{tensor.name}_Identity"), inputs=[tensor], outputs=[kept])
    out = gs.Variable(names.new(f"{tensor.name}_gated"), dtype=tensor.dtype, shape=tensor.shape)
    then_branch = gs.Graph(nodes=q_nodes, outputs=[dq_out], name=names.new(f"{tensor.name}_q_branch"))
    else_branch = gs.Graph(nodes=[identity], outputs=[kept], name=names.new(f"{tensor.name}_f_branch"))
    graph.nodes.append(gs.Node("If", names.new(f"{tensor.name}_If"), inputs=[gate], outputs=[out],
                               attrs={"then_branch": then_branch, "else_branch": else_branch}))
    return out


def _gate_node(graph: gs.Graph, names: UniqueNames, index: GraphIndex, node: gs.Node,
               node_edges: list[tuple[int, TensorQuantSpec]], params: dict[str, QuantParams],
               gate: gs.Variable, dq_only: bool, fix: Corrections) -> str:
    """Replace ``node`` by ``If(gate)`` whose branches hold its quantized and its float copy; the If's name."""
    q_inputs, extra = _quantized_inputs(names, index, node, node_edges, params, dq_only, fix)
    branches = []
    for tag, inputs, pre in (("quantized", q_inputs, extra), ("float", list(node.inputs), [])):
        outs = [gs.Variable(names.new(f"{o.name}_{tag}"), dtype=o.dtype, shape=o.shape) for o in node.outputs]
        copy = gs.Node(node.op, names.new(f"{node.name}_{tag}"), attrs=dict(node.attrs), inputs=inputs,
                       outputs=outs, domain=node.domain)
        members = pre + [copy]
        if tag == "quantized" and node.name in fix.after:
            members.append(_shifted(names, copy, fix.after[node.name]))
        branches.append(gs.Graph(nodes=members, outputs=outs, name=names.new(f"{node.name}_{tag}_branch")))
    outputs = list(node.outputs)
    node.inputs.clear()
    node.outputs.clear()
    name = names.new(f"{node.name}_If")
    graph.nodes.append(gs.Node("If", name, inputs=[gate], outputs=outputs,
                               attrs={"then_branch": branches[0], "else_branch": branches[1]}))
    return name


def _shifted(names: UniqueNames, node: gs.Node, delta: np.ndarray) -> gs.Node:
    """An Add of ``delta`` on ``node``'s output: the node writes a new tensor, the Add the old one."""
    out = node.outputs[0]
    raw = gs.Variable(names.new(f"{out.name}_uncorrected"), dtype=out.dtype, shape=out.shape)
    node.outputs[0] = raw
    return gs.Node("Add", names.new(f"{node.name}_bias_correction"),
                   inputs=[raw, gs.Constant(names.new(f"{node.name}_bias_delta"), delta)], outputs=[out])


def _quantized_inputs(names: UniqueNames, index: GraphIndex, node: gs.Node,
                      node_edges: list[tuple[int, TensorQuantSpec]], params: dict[str, QuantParams],
                      dq_only: bool, fix: Corrections):
    """``node``'s inputs with its planned edges fake-quantized (and its corrected biases), and the Q/DQ
    nodes that compute them."""
    inputs = list(node.inputs)
    for (name, i), value in fix.inputs.items():
        if name == node.name:
            inputs += [gs.Variable.empty()] * (i + 1 - len(inputs))
            inputs[i] = gs.Constant(names.new(f"{node.name}_bias_corrected"), value)
    extra: list[gs.Node] = []
    for idx, spec in node_edges:
        tensor = index.tensors[spec.tensor]
        p = params[spec.key]
        if spec.role is Role.ACTIVATION:
            q_nodes, inputs[idx] = _qdq(names, tensor, p)
            extra += q_nodes
        else:
            value = fix.inputs.get((node.name, idx), index.constant_value(tensor))
            # as insert_qdq writes it: int8 weights on the narrow grid (dq_only), float weights through a
            # QuantizeLinear in the graph (full grid), int32 biases on the full grid
            narrow = spec.role is Role.WEIGHT and dq_only
            fq = fake_quantize_as(value, p, narrow=narrow).astype(value.dtype)
            inputs[idx] = gs.Constant(names.new(f"{tensor.name}_fq"), fq)
    return inputs, extra


def _qdq(names: UniqueNames, tensor: gs.Tensor, p: QuantParams) -> tuple[list[gs.Node], gs.Variable]:
    base = tensor.name
    scale = gs.Constant(names.new(f"{base}_scale"), np.asarray(p.scale, dtype=np.float32))
    zero = gs.Constant(names.new(f"{base}_zero_point"), np.asarray(p.zero_point, dtype=int_format(p.dtype).numpy))
    attrs = {"axis": int(p.axis)} if p.axis is not None and np.ndim(p.scale) == 1 else {}
    q_out = gs.Variable(names.new(f"{base}_q"), dtype=int_format(p.dtype).numpy, shape=tensor.shape)
    dq_out = gs.Variable(names.new(f"{base}_dq"), dtype=tensor.dtype, shape=tensor.shape)
    q = gs.Node("QuantizeLinear", names.new(f"{base}_QuantizeLinear"), attrs=attrs,
                inputs=[tensor, scale, zero], outputs=[q_out])
    dq = gs.Node("DequantizeLinear", names.new(f"{base}_DequantizeLinear"), attrs=attrs,
                 inputs=[q_out, scale, zero], outputs=[dq_out])
    return [q, dq], dq_out
