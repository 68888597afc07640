"""LSTM -> com.microsoft.DynamicQuantizeLSTM: int8 weights, activations quantized by the kernel at run time.

The contrib op takes the ONNX LSTM's inputs X, W, R, B, sequence_lens, initial_h, initial_c, P, then
W_scale, W_zero_point, R_scale, R_zero_point (inputs 8-11), with the weights transposed to
``[directions, input_size, 4*hidden]`` and ``[directions, hidden, 4*hidden]`` (the ONNX LSTM's are
``[directions, 4*hidden, input_size]``): the kernel packs them as the B operand of its uint8 x int8 GEMM.
Scales are ``[directions]`` (one per direction) or ``[directions, 4*hidden]`` (per channel: one per gate
row, which the kernel accepts, onnxruntime's own quantizer writes per tensor); int8 zero points must be 0.

Weights are symmetric on ``[-qmax, qmax]`` with ``qmax`` the target's (onnxq.calibrate.solve.weight_qmax:
63 for ort-cpu unless reduce_range is off, because the uint8 x int8 kernels of x86 without VNNI add
pairs of products in int16).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxq.calibrate.params import MIN_SCALE
from onnxq.calibrate.weights import weight_amax
from onnxq.config import WeightSpec
from onnxq.formats import quantize
from onnxq.graph.names import UniqueNames
from onnxq.graph.query import GraphIndex
from onnxq.placement.recurrent import DYNAMIC_LSTM
from onnxq.records.kernels import KernelChoice, weights_text

CONTRIB_DOMAIN = "com.microsoft"


def symmetric_int8(value: np.ndarray, axis: int | None, spec: WeightSpec, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes on [-qmax, qmax], float32 scales) of ``value``, per slice along ``axis`` (None: one).

    The same range methods as every other weight (``spec.method``: max, mse, percentile)."""
    options = {"percentile": spec.percentile} if spec.method.value == "percentile" else {}
    if spec.method.value == "mse":
        options = {"qmax": qmax}
    amax = np.asarray(weight_amax(value, axis, spec.method.value, **options), dtype=np.float64)
    scale = np.asarray(np.maximum(amax / qmax, MIN_SCALE), dtype=np.float32)  # a 0-d array per tensor
    codes = quantize(value, scale, 0, axis, -qmax, qmax).astype(np.int8)
    return codes, scale


def _lstm_weight(value: np.ndarray, spec: WeightSpec, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """``value`` [D, 4H, K] as the kernel's int8 [D, K, 4H] and scales [D, 4H] (per channel) or [D]."""
    d, rows, k = value.shape
    if spec.per_channel:
        codes, scale = symmetric_int8(value.reshape(d * rows, k), 0, spec, qmax)
        return codes.reshape(d, rows, k).transpose(0, 2, 1).copy(), scale.reshape(d, rows)
    codes, scale = symmetric_int8(value.reshape(d, rows * k), 0, spec, qmax)
    return codes.reshape(d, rows, k).transpose(0, 2, 1).copy(), scale


def to_dynamic_lstm(graph: gs.Graph, index: GraphIndex, node: gs.Node, names: UniqueNames, spec: WeightSpec,
                    qmax: int, rule: str) -> KernelChoice:
    """Turn ``node`` (an LSTM that placement.recurrent.lstm_problem accepts) into DynamicQuantizeLSTM, in place."""
    inputs = list(node.inputs) + [gs.Variable.empty()] * (8 - len(node.inputs))
    extra = []
    for idx, what in ((1, "W"), (2, "R")):
        tensor = node.inputs[idx]
        codes, scale = _lstm_weight(index.constant_value(tensor), spec, qmax)
        inputs[idx] = gs.Constant(names.new(f"{tensor.name}_quantized"), codes)
        extra += [gs.Constant(names.new(f"{tensor.name}_scale"), scale),
                  gs.Constant(names.new(f"{tensor.name}_zero_point"), np.zeros(scale.shape, np.int8))]
    node.inputs.clear()
    node.inputs.extend(inputs[:8] + extra)
    node.op = "DynamicQuantizeLSTM"
    node.domain = CONTRIB_DOMAIN
    node.attrs.pop("layout", None)
    return KernelChoice(node.name, "LSTM", DYNAMIC_LSTM, weights_text(spec.per_channel, qmax), rule,
                        "onnxruntime's integer LSTM: weights int8, inputs and hidden state quantized to uint8 "
                        "at each step (no calibrated range needed)")


def insert_recurrent(graph: gs.Graph, quantized_nodes: tuple[str, ...], spec: WeightSpec,
                     qmax: int) -> tuple[KernelChoice, ...]:
    """Write DynamicQuantizeLSTM for every LSTM of ``graph`` (top level) that the plan quantizes
    (``quantized_nodes``: placement.recurrent's rule proposed it); returns what was written."""
    wanted = set(quantized_nodes)
    lstms = [n for n in graph.nodes if n.op == "LSTM" and n.name in wanted]
    if not lstms:
        return ()
    index = GraphIndex.build(graph)
    names = UniqueNames.of_graph(graph)
    out = tuple(to_dynamic_lstm(graph, index, n, names, spec, qmax, "recurrent-dynamic-lstm") for n in lstms)
    graph.cleanup(remove_unused_graph_inputs=False)
    return out
