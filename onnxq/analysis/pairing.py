"""Pairing a float model with its quantized version: which outputs and tensors both produce, which carry
a Q/DQ pair, and the onnxruntime sessions that expose them (graph optimizations off, so every tensor exists
by its name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxq import runtime
from onnxq.collect import routes
from onnxq.collect.augment import Exposure, exposure
from onnxq.collect.feeds import input_specs_from_model
from onnxq.errors import UnsupportedModelError
from onnxq.graph.usage import all_nodes

log = logging.getLogger(__name__)

FLOAT_TYPES = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)"})


def node_outputs(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    """Tensor name -> (topological index, producer) for every node output of the main graph."""
    return {o: (k, n) for k, n in enumerate(model.graph.node) for o in n.output if o}


def every_node_output(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    """:func:`node_outputs` with the nodes of If/Loop/Scan bodies too (index: depth-first order, a body's
    nodes right after the node that holds it)."""
    return {o: (k, n) for k, n in enumerate(all_nodes(model.graph)) for o in n.output if o}


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every initializer by name, those of bodies included."""
    out = {t.name: t for t in model.graph.initializer}
    for node in all_nodes(model.graph):
        for attr in node.attribute:
            for body in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                out.update((t.name, t) for t in body.initializer)
    return out


def qdq_pairs(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> output of the DequantizeLinear fed by its QuantizeLinear (a Q/DQ pair on that tensor),
    in bodies too (names are unique model-wide)."""
    nodes = all_nodes(model.graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = {}
    for q in nodes:
        if q.op_type != "QuantizeLinear" or q.input[0] in pairs:
            continue
        dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
        if dq is not None:
            pairs[q.input[0]] = dq.output[0]
    return pairs


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


@dataclass(frozen=True)
class Fetcher:
    """A session on a model exposing ``exposure.tensors``: calling it with a feed gives each tensor's value
    (a body tensor's over every execution of its body; empty when its If branch did not run)."""

    session: Any
    exposure: Exposure

    def __call__(self, feed: dict[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        index = {t: k for k, t in enumerate(self.exposure.tensors)}
        wanted = list(self.exposure.tensors) if names is None else [t for t in names if t in index]
        fetched = runtime.run(self.session, feed, [self.exposure.outputs[index[t]] for t in wanted])
        return {t: routes.unpack(v, self.exposure.routes.get(t)) for t, v in zip(wanted, fetched, strict=True)}


def sessions(fm: onnx.ModelProto, qm: onnx.ModelProto, per_layer: bool, optimize: bool):
    """(float fetcher, exact quantized fetcher, optimized quantized session or None, plan).

    Per layer, tensors computed inside If/Loop/Scan bodies take part like top-level ones (routed out by
    :func:`onnxq.collect.augment.exposure`); a body tensor only when both models record it as float (a
    routed output must declare its type), after shape inference on copies of both.
    """
    outputs = shared_outputs(fm, qm)
    if not per_layer:
        plan = FetchPlan(outputs)
        fs, qs = fetcher(fm, plan.float_fetch()), fetcher(qm, plan.quant_fetch())
        return fs, qs, runtime.make_session(qm, optimize=True) if optimize else None, plan
    f_nodes, q_nodes = every_node_output(fm), every_node_output(qm)
    top_f, top_q = node_outputs(fm), node_outputs(qm)
    f_body, q_body = float_body_tensors(fm), float_body_tensors(qm)
    candidates = [t for t in q_nodes if t in f_nodes
                  and (t in top_q and t in top_f or t in f_body and t in q_body)]
    pairs = qdq_pairs(qm)
    inits = set(initializers(qm))
    weights = {t: dq for t, dq in pairs.items() if t in inits}
    inputs = [s.name for s in input_specs_from_model(fm) if s.name in pairs and s.dtype.kind == "f"]
    dq = {t: pairs[t] for t in inputs + candidates if t in pairs}
    f_exp = exposure(fm, candidates)
    q_exp = exposure(qm, list(dict.fromkeys(candidates + list(dq.values()) + list(weights.values()))))
    fs, qs = Fetcher(runtime.make_session(f_exp.model), f_exp), Fetcher(runtime.make_session(q_exp.model), q_exp)
    floats = _float_tensors(fs) & _float_tensors(qs)
    layers = tuple(inputs) + tuple(t for t in candidates if t in floats and t not in outputs)
    layer_dq = {t: d for t, d in dq.items() if t in layers}
    plan = FetchPlan(outputs, layers, layer_dq, weights, frozenset(inputs))
    return fs, qs, runtime.make_session(qm, optimize=True) if optimize else None, plan


def fetcher(model: onnx.ModelProto, tensors: Sequence[str]) -> Fetcher:
    """A :class:`Fetcher` for ``tensors`` of ``model`` (body tensors routed out; their type must be known)."""
    exp = exposure(model, list(tensors))
    return Fetcher(runtime.make_session(exp.model), exp)


def _float_tensors(fetcher: Fetcher) -> set[str]:
    """The exposed tensors whose session output is a float tensor."""
    types = {o.name: o.type for o in fetcher.session.get_outputs()}
    return {t for t, o in zip(fetcher.exposure.tensors, fetcher.exposure.outputs) if types.get(o) in FLOAT_TYPES}


_FLOAT_ELEMS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                          onnx.TensorProto.BFLOAT16})


def float_body_tensors(model: onnx.ModelProto) -> set[str]:
    """Node outputs inside bodies whose element type is recorded, or inferred, as float."""
    if not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in model.graph.node for a in n.attribute):
        return set()
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - inference is a help here: without it, recorded types still count
        log.debug("shape inference for body tensor types failed: %s", exc)
    out: set[str] = set()
    for node in all_nodes(model.graph):
        for attr in node.attribute:
            for body in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                produced = {o for n in body.node for o in n.output}
                out |= {vi.name for vi in [*body.value_info, *body.output] if vi.name in produced
                        and vi.type.tensor_type.elem_type in _FLOAT_ELEMS}
    return out
