"""Pairing a float model with its quantized version: which outputs and tensors both produce, which carry
a Q/DQ pair, and the onnxruntime sessions that expose them (graph optimizations off, so every tensor exists
by its name).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx

from onnxq import runtime
from onnxq.collect.augment import expose
from onnxq.collect.feeds import input_specs_from_model
from onnxq.errors import UnsupportedModelError

log = logging.getLogger(__name__)

FLOAT_TYPES = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)"})


def node_outputs(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    """Tensor name -> (topological index, producer) for every node output of the main graph."""
    return {o: (k, n) for k, n in enumerate(model.graph.node) for o in n.output if o}


def qdq_pairs(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> output of the DequantizeLinear fed by its QuantizeLinear (a Q/DQ pair on that tensor)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = {}
    for q in model.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in pairs:
            continue
        dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
        if dq is not None:
            pairs[q.input[0]] = dq.output[0]
    return pairs


def float_outputs(session) -> set[str]:
    return {o.name for o in session.get_outputs() if o.type in FLOAT_TYPES}


@dataclass(frozen=True)
class FetchPlan:
    """What to fetch from each session and how the fetched values pair up."""

    outputs: tuple[str, ...]
    layers: tuple[str, ...] = ()  # shared float tensors (quantized graph inputs included)
    dq: dict[str, str] = field(default_factory=dict)  # tensor -> its DQ output in the quantized model
    weights: dict[str, str] = field(default_factory=dict)  # initializer -> its DQ output (quantized model)
    inputs: frozenset[str] = frozenset()  # graph inputs: read from the feed, not fetched

    def float_fetch(self) -> list[str]:
        return [t for t in dict.fromkeys(self.outputs + self.layers) if t not in self.inputs]

    def quant_fetch(self) -> list[str]:
        extra = [self.dq[t] for t in self.layers if t in self.dq] + list(self.weights.values())
        return [t for t in dict.fromkeys(self.outputs + self.layers + tuple(extra)) if t not in self.inputs]


def shared_outputs(fm: onnx.ModelProto, qm: onnx.ModelProto) -> tuple[str, ...]:
    q_names = {o.name for o in qm.graph.output}
    shared = tuple(o.name for o in fm.graph.output if o.name in q_names)
    if not shared:
        raise UnsupportedModelError(
            "the two models share no output name; compare a float model with a model quantized from it "
            "(quantizers keep the output names)")
    missing = [o.name for o in fm.graph.output if o.name not in q_names]
    if missing:
        log.warning("outputs %s of the float model are not in the quantized model; not compared", missing)
    return shared


def check_inputs(fm: onnx.ModelProto, qm: onnx.ModelProto) -> None:
    f_in = {s.name for s in input_specs_from_model(fm)}
    q_in = {s.name for s in input_specs_from_model(qm)}
    if f_in != q_in:
        raise UnsupportedModelError(
            f"the models take different inputs ({sorted(f_in)} vs {sorted(q_in)}); compare a float model "
            "with a model quantized from it")


def sessions(fm: onnx.ModelProto, qm: onnx.ModelProto, per_layer: bool, optimize: bool):
    """(float session, exact quantized session, optimized quantized session or None, plan)."""
    outputs = shared_outputs(fm, qm)
    if not per_layer:
        fs, qs = runtime.make_session(fm), runtime.make_session(qm)
        return fs, qs, runtime.make_session(qm, optimize=True) if optimize else None, FetchPlan(outputs)
    f_nodes, q_nodes = node_outputs(fm), node_outputs(qm)
    candidates = [t for t in q_nodes if t in f_nodes]
    pairs = qdq_pairs(qm)
    inits = {t.name for t in qm.graph.initializer}
    weights = {t: dq for t, dq in pairs.items() if t in inits}
    inputs = [s.name for s in input_specs_from_model(fm) if s.name in pairs and s.dtype.kind == "f"]
    dq = {t: pairs[t] for t in inputs + candidates if t in pairs}
    fs = runtime.make_session(expose(fm, candidates))
    qs = runtime.make_session(expose(qm, candidates + list(dq.values()) + list(weights.values())))
    floats = float_outputs(fs) & float_outputs(qs)
    layers = tuple(inputs) + tuple(t for t in candidates if t in floats and t not in outputs)
    layer_dq = {t: d for t, d in dq.items() if t in layers}
    plan = FetchPlan(outputs, layers, layer_dq, weights, frozenset(inputs))
    return fs, qs, runtime.make_session(qm, optimize=True) if optimize else None, plan
