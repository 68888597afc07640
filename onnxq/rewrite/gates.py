"""A "gated" QDQ model: every quantized node can be switched between float and fake-quantized inputs by feed.

Sensitivity analysis evaluates the model under many quantization subsets (one layer quantized, all but
one, the greedy fallback's steps). Rebuilding and reloading an onnxruntime session per subset costs more
than running it, so the model is built once with a switch per *unit* (a quantized node of the plan):

    gates: bool[K] graph input                      (one entry per unit, in ``units`` order)
    g_k  = Gather(gates, k)                          (a bool scalar)
    x'   = If(g_k) then DQ(Q(x)) else x              (each planned input edge of unit k)

Why ``If`` and not ``Where(g_k, DQ(Q(x)), x)``: ``Where`` computes Q, DQ and a select over the whole
tensor on every run whatever the gate, so a one-at-a-time run costs as much as a fully quantized one plus
the select; ``If`` runs only the chosen branch (measured on EfficientNet-Lite0, batch 25, 2 threads: see
``benchmarks/sensitivity.py``). A Q/DQ pair shared by several units is built once per edge's branch.
Weights (and int32 biases) are fake-quantized once in numpy: the branch returns a constant, exactly
``DQ(Q(w))`` as onnxruntime computes it (round half to even, saturate, then ``q * scale`` in float32).

With every gate on, the outputs equal those of :func:`onnxq.rewrite.insert_qdq` (same Q/DQ, same params);
with every gate off, those of the float model. Run it with onnxruntime graph optimizations disabled, as
exact fake quantization.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.graph.query import GraphIndex
from onnxq.placement.plan import QuantPlan, Role
from onnxq.rewrite.insert_qdq import NP_DTYPES, QuantParams, _copy_model_fields, _Names, quantize_array

GATES_INPUT = "onnxq_gates"


@dataclass(frozen=True)
class GatedModel:
    """The gated model and the unit order of its ``gates`` input."""

    model: onnx.ModelProto
    units: tuple[str, ...]
    gates_input: str = GATES_INPUT

    def feed(self, quantized: Sequence[str] | set[str] | frozenset[str]) -> dict[str, np.ndarray]:
        """The gates feed that quantizes exactly the units in ``quantized`` (others stay float)."""
        on = set(quantized)
        return {self.gates_input: np.array([u in on for u in self.units], dtype=bool)}


def fake_quantize(value: np.ndarray, p: QuantParams, narrow: bool) -> np.ndarray:
    """``DQ(Q(value))`` in float32, as onnxruntime computes it for a constant."""
    q = quantize_array(value, p, narrow=narrow).astype(np.float32)
    scale, zp = np.asarray(p.scale, np.float32), np.asarray(p.zero_point).astype(np.float32)
    if p.axis is not None and value.ndim > 0 and scale.ndim == 1:
        shape = [1] * value.ndim
        shape[p.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(value.dtype)


def build_gated(
    model: onnx.ModelProto, plan: QuantPlan, params: dict[str, QuantParams], units: Sequence[str] | None = None
) -> GatedModel:
    """The gated model of ``plan``: the edges of each unit (default: ``plan.quantized_nodes``) switchable.

    Edges of consumers that are not units stay always quantized. ``model`` is not modified.
    """
    units = tuple(plan.quantized_nodes if units is None else units)
    graph = gs.import_onnx(model)
    index = GraphIndex.build(graph)
    nodes = {n.name: n for n in graph.nodes}
    names = _Names(graph)
    position = {u: k for k, u in enumerate(units)}
    gates = gs.Variable(names.new(GATES_INPUT), dtype=np.bool_, shape=[len(units)])
    graph.inputs.append(gates)
    gate_of: dict[str, gs.Variable] = {}

    def gate(unit: str) -> gs.Variable:
        if unit not in gate_of:
            k = gs.Constant(names.new(f"onnxq_gate_index_{position[unit]}"), np.array(position[unit], np.int64))
            out = gs.Variable(names.new(f"onnxq_gate_{position[unit]}"), dtype=np.bool_, shape=[])
            graph.nodes.append(gs.Node("Gather", names.new(f"onnxq_gate_{position[unit]}_Gather"),
                                       inputs=[gates, k], outputs=[out]))
            gate_of[unit] = out
        return gate_of[unit]

    for spec in plan.specs:
        tensor = index.tensors[spec.tensor]
        p = params[spec.key]
        for node_name, idx in spec.consumers:
            if spec.role is Role.ACTIVATION:
                quant_branch = _qdq_branch(names, tensor, p)
            else:
                value = index.constant_value(tensor)
                fq = fake_quantize(value, p, narrow=spec.role is Role.WEIGHT)
                quant_branch = _constant_branch(names, f"{tensor.name}_fq", fq)
            if node_name in position:
                edge = _if(graph, names, gate(node_name), quant_branch, tensor)
            else:
                edge = _inline(graph, quant_branch)
            nodes[node_name].inputs[idx] = edge
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    _copy_model_fields(model, out)
    return GatedModel(out, units, gates.name)


def _qdq_branch(names: _Names, tensor: gs.Tensor, p: QuantParams) -> gs.Graph:
    """A subgraph ``DQ(Q(tensor))`` reading ``tensor`` from the outer scope."""
    base = tensor.name
    scale = gs.Constant(names.new(f"{base}_scale"), np.asarray(p.scale, dtype=np.float32))
    zero = gs.Constant(names.new(f"{base}_zero_point"), np.asarray(p.zero_point, dtype=NP_DTYPES[p.dtype]))
    attrs = {"axis": int(p.axis)} if p.axis is not None and np.ndim(p.scale) == 1 else {}
    q_out = gs.Variable(names.new(f"{base}_q"), dtype=NP_DTYPES[p.dtype], shape=tensor.shape)
    dq_out = gs.Variable(names.new(f"{base}_dq"), dtype=tensor.dtype, shape=tensor.shape)
    q = gs.Node("QuantizeLinear", names.new(f"{base}_QuantizeLinear"), attrs=attrs,
                inputs=[tensor, scale, zero], outputs=[q_out])
    dq = gs.Node("DequantizeLinear", names.new(f"{base}_DequantizeLinear"), attrs=attrs,
                 inputs=[q_out, scale, zero], outputs=[dq_out])
    return gs.Graph(nodes=[q, dq], inputs=[], outputs=[dq_out], name=names.new(f"{base}_quantized"))


def _constant_branch(names: _Names, base: str, value: np.ndarray) -> gs.Graph:
    out = gs.Variable(names.new(base), dtype=value.dtype, shape=list(value.shape))
    node = gs.Node("Constant", names.new(f"{base}_Constant"), attrs={"value": gs.Constant(names.new(f"{base}_value"), value)},
                   outputs=[out])
    return gs.Graph(nodes=[node], inputs=[], outputs=[out], name=names.new(f"{base}_branch"))


def _float_branch(names: _Names, tensor: gs.Tensor) -> gs.Graph:
    out = gs.Variable(names.new(f"{tensor.name}_float"), dtype=tensor.dtype, shape=tensor.shape)
    node = gs.Node("Identity", names.new(f"{tensor.name}_Identity"), inputs=[tensor], outputs=[out])
    return gs.Graph(nodes=[node], inputs=[], outputs=[out], name=names.new(f"{tensor.name}_float_branch"))


def _if(graph: gs.Graph, names: _Names, cond: gs.Variable, then: gs.Graph, tensor: gs.Tensor) -> gs.Variable:
    dtype = tensor.dtype if not isinstance(tensor, gs.Constant) else tensor.values.dtype
    shape = tensor.shape if not isinstance(tensor, gs.Constant) else list(tensor.values.shape)
    out = gs.Variable(names.new(f"{tensor.name}_gated"), dtype=dtype, shape=shape)
    graph.nodes.append(gs.Node("If", names.new(f"{tensor.name}_If"),
                               attrs={"then_branch": then, "else_branch": _float_branch(names, tensor)},
                               inputs=[cond], outputs=[out]))
    return out


def _inline(graph: gs.Graph, branch: gs.Graph) -> gs.Variable:
    graph.nodes.extend(branch.nodes)
    return branch.outputs[0]
