"""Means of activations around weighted ops, measured with onnxruntime, for bias correction.

Two measurements, both streaming (each batch is reduced and dropped):

* ``input_moments``: for each correctable Conv/Gemm/MatMul with a constant weight, the moments of its
  activation input that bias correction needs (Conv: tap means ``[C, taps]``; Gemm/MatMul: the mean over
  every axis but K). Run on the float model, they give the analytic (data-driven) correction of
  ``onnxq.calibrate.bias_correction``.
* ``output_means``: the per-channel mean of chosen tensors (channel axis given per tensor), on any model,
  float or quantized. Comparing the two is the empirical correction, which also catches the mean shift
  of activation clipping and of upstream layers.

``moment_reducers`` gives the same input moments as reducers for the collector
(``onnxq.collect.collectors.collect_all``), so quantization measures them in its calibration run
instead of a second pass over the data.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq import runtime
from onnxq.calibrate.bias_correction import (
    CORRECTABLE_OPS,
    ConvGeometry,
    InputMoments,
    conv_tap_means,
    matmul_means,
    merge_moments,
)
from onnxq.collect import augment
from onnxq.collect.collectors import collect_all
from onnxq.collect.feeds import DataSource
from onnxq.collect.passes import Reducer
from onnxq.config import QuantConfig
from onnxq.errors import CalibrationDataError
from onnxq.formats import fake_quantize_as
from onnxq.graph.query import GraphIndex
from onnxq.graph.scopes import walk
from onnxq.records import QuantParams, QuantPlan
from onnxq.rewrite.bias_correction import correct_biases

log = logging.getLogger(__name__)

Feeds = Iterable[Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class CorrectableNode:
    """A weighted op whose bias can absorb a mean shift: its activation input and channel axis."""

    node: str
    op: str
    activation: str
    weight: str
    output: str
    channel_axis: int  # of the output: Conv 1, Gemm/MatMul -1
    attrs: dict
    kernel: tuple[int, ...] = ()


def correctable_nodes(model: onnx.ModelProto | GraphIndex, names: Iterable[str] | None = None
                      ) -> list[CorrectableNode]:
    """Conv/Gemm/MatMul nodes (optionally only ``names``) with a constant weight and a variable input."""
    top = model if isinstance(model, GraphIndex) else GraphIndex.build(gs.import_onnx(model))
    wanted = None if names is None else set(names)
    out = []
    for scope in walk(top.graph):  # bodies too: their moments are collected through routes like any tensor
        index = top if scope.owner is None else GraphIndex.build(scope.graph)
        out += _correctable_in(index, wanted)
    return out


def _correctable_in(index: GraphIndex, wanted: set[str] | None) -> list[CorrectableNode]:
    out = []
    for node in index.graph.nodes:
        if node.op not in CORRECTABLE_OPS or (wanted is not None and node.name not in wanted):
            continue
        if len(node.inputs) < 2 or index.is_constant(node.inputs[0]) or not index.is_constant(node.inputs[1]):
            continue
        weight = index.constant_value(node.inputs[1])
        if weight is None or weight.dtype.kind != "f":
            continue
        if node.op == "MatMul" and weight.ndim != 2:
            continue
        if node.op == "Gemm" and node.attrs.get("transA", 0) and weight.ndim != 2:
            continue
        axis = 1 if node.op == "Conv" else -1
        kernel = tuple(int(k) for k in weight.shape[2:]) if node.op == "Conv" else ()
        out.append(CorrectableNode(node.name, node.op, node.inputs[0].name, node.inputs[1].name,
                                   node.outputs[0].name, axis, dict(node.attrs), kernel))
    return out


def input_quantizers(plan: QuantPlan, params: Mapping[str, QuantParams]) -> dict[str, QuantParams]:
    """Node name -> the parameters of the Q/DQ pair on its input 0 (for nodes whose input is quantized)."""
    out = {}
    for spec in plan.activations():
        for node, idx in spec.consumers:
            if idx == 0 and spec.key in params:
                out[node] = params[spec.key]
    return out


def _means(node: CorrectableNode, x: np.ndarray) -> tuple[np.ndarray, int]:
    if node.op == "Conv":
        return conv_tap_means(x, ConvGeometry.from_attrs(node.attrs, node.kernel))
    return matmul_means(x, trans=node.op == "Gemm" and bool(node.attrs.get("transA", 0)))


def _moments(node: CorrectableNode, x: np.ndarray, quantizer: QuantParams | None = None) -> InputMoments:
    mean, count = _means(node, x)
    mean_q = None if quantizer is None else _means(node, fake_quantize_as(x, quantizer))[0]
    return InputMoments(mean, count, mean_q)


def input_moments(
    model: onnx.ModelProto,
    nodes: list[CorrectableNode],
    feeds: Feeds,
    quantizers: Mapping[str, QuantParams] | None = None,
) -> dict[str, InputMoments]:
    """Moments of the activation input of each node over ``feeds`` (float model), keyed by node name.

    With ``quantizers`` (node -> input Q/DQ parameters, see ``input_quantizers``) the moments also hold
    the mean of the fake-quantized input, so the correction covers activation quantization too.
    """
    quantizers = quantizers or {}
    tensors = list(dict.fromkeys(n.activation for n in nodes))
    # optimised like the calibration run (onnxq.collect.collectors), so both give the same means; body
    # tensors are routed out as there
    exposed = augment.exposure(model, tensors)
    session = runtime.make_session(exposed.model, optimize=True)
    out: dict[str, InputMoments | None] = {n.node: None for n in nodes}
    seen = False
    for feed in feeds:
        seen = True
        values = dict(zip(tensors, exposed.values(runtime.run(session, feed, list(exposed.outputs)))))
        for node in nodes:
            x = values[node.activation]
            if x.size:  # empty: an If branch that did not run on this feed
                out[node.node] = merge_moments(out[node.node], _moments(node, x, quantizers.get(node.node)))
    if not seen:
        raise CalibrationDataError("the data produced no samples for bias correction; give at least one")
    return {name: m for name, m in out.items() if m is not None}  # None: a branch the data never took


def output_means(model: onnx.ModelProto, axes: Mapping[str, int], feeds: Feeds) -> dict[str, np.ndarray]:
    """Per-channel mean (float64) of each tensor in ``axes`` (tensor -> channel axis) over ``feeds``."""
    tensors = list(axes)
    exposed = augment.exposure(model, tensors)
    session = runtime.make_session(exposed.model)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = dict.fromkeys(tensors, 0)
    for feed in feeds:
        for name, value in zip(tensors, exposed.values(runtime.run(session, feed, list(exposed.outputs)))):
            if not np.size(value):
                continue
            v = np.moveaxis(np.asarray(value, dtype=np.float64), axes[name], -1)
            rows = v.reshape(-1, v.shape[-1])
            sums[name] = sums.get(name, 0.0) + rows.sum(axis=0)
            counts[name] += rows.shape[0]
    if not sums:
        raise CalibrationDataError("the data produced no samples for bias correction; give at least one")
    return {name: sums[name] / counts[name] for name in tensors if name in sums}


def correction_nodes(model: onnx.ModelProto | GraphIndex, plan: QuantPlan) -> list[CorrectableNode]:
    """The correctable nodes whose weight the plan quantizes."""
    wanted = {node for spec in plan.weights() for node, idx in spec.consumers if idx == 1}
    return correctable_nodes(model, wanted) if wanted else []


def moment_reducers(nodes: Iterable[CorrectableNode]) -> list[Reducer]:
    """Collector reducers measuring each node's input moments (keyed by node name), weight error only."""
    return [Reducer(node.node, node.activation, functools.partial(_moments, node, quantizer=None), merge_moments)
            for node in nodes]


def bias_corrected(
    model: onnx.ModelProto,
    plan: QuantPlan,
    params: Mapping[str, QuantParams],
    feeds: Feeds,
    *,
    activations: bool = False,
) -> onnx.ModelProto:
    """``model`` with biases corrected for the planned weight quantization, means measured on ``feeds``.

    One float pass over ``feeds`` (the calibration data). ``activations=True`` also corrects the mean
    error of each op's quantized input (measured: not better on EfficientNet-Lite0, so off by default).
    """
    nodes = correction_nodes(model, plan)
    if not nodes:
        return model
    quantizers = input_quantizers(plan, params) if activations else None
    return correct_biases(model, plan, params, input_moments(model, nodes, feeds, quantizers))


def channel_maxima(
    model: onnx.ModelProto, tensors: Iterable[str], source: DataSource, config: QuantConfig
) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) max |x| of each tensor over ``source`` (one collection run, nothing else)."""
    reducers = [Reducer(t, t, _channel_absmax, _running_max) for t in dict.fromkeys(tensors)]
    if not reducers:
        return {}
    empty = QuantPlan(config.target.value, (), (), ())
    return collect_all(model, empty, source, config, reducers=reducers).reduced


def _channel_absmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise CalibrationDataError(f"a tensor of rank {x.ndim} has no channel axis to equalize")
    return np.abs(x).max(axis=(0, *range(2, x.ndim))).astype(np.float64)


def _running_max(acc: np.ndarray | None, batch: np.ndarray) -> np.ndarray:
    return batch if acc is None else np.maximum(acc, batch)
