"""Depthwise input equalization: per-channel ranges evened out before a per-tensor activation scale.

Why. TensorRT quantizes an activation with one scale per tensor. When the channels of a depthwise
convolution's input have very different ranges, that one scale leaves the small channels a handful of
levels, or none: YOLOX-Nano's first SiLU output spans 0.16 to 133 per channel, and its depthwise conv
loses 26 dB of output SQNR to it (mAP 33.9 float, 28.7 quantized with entropy, 1.6 with min-max).
Reordering calibration methods cannot fix it: the information is gone in the rounding.

How. A depthwise conv reads each input channel with weights of its own, so dividing input channel ``c``
by ``s_c`` and multiplying the weights of the output channels that read it by ``s_c`` computes the same
float function exactly (Nagel et al. 2019, "Data-Free Quantization", section 4.1, which does this across
ReLU; here an explicit ``Mul`` does it, so any activation in between works). Per-channel weight
quantization is invariant to a per-channel factor, so the weights lose nothing, while the activation now
has every channel at the same range: ``s_c = max|x_c| / max_c max|x_c|`` measured on all the calibration
data (floored at ``MIN_SCALE``: a channel below it is as good as dead, and the floor keeps the factor
finite in float16). The maxima must cover every sample the histograms will see: measured on a subset,
a channel quiet there but active later comes out scaled up thousands of times and stretches the
tensor's range past everything else (EfficientNet-Lite0: 0 % top-1 agreement with 32 of 100 samples). The ``Mul`` sits before the Q/DQ pair; TensorRT fuses it with the producer's pointwise
epilogue. Other consumers of the tensor keep reading the original. An original weight no other node
reads is removed: a dead initializer is not harmless, onnxruntime drops it while resolving the graph and
then cannot take it in memory (``onnxq.runtime``): every session on the equalized graph would fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxq.graph.names import UniqueNames
from onnxq.graph.usage import drop_unread

MIN_SCALE = 2.0**-12


@dataclass(frozen=True)
class DepthwiseInput:
    """An activation tensor read by depthwise convolutions (as input 0), and those convs' names."""

    tensor: str
    convs: tuple[str, ...]
    channels: int


def depthwise_inputs(model: onnx.ModelProto, nodes: set[str] | None = None) -> list[DepthwiseInput]:
    """Activation tensors read by depthwise Convs with a constant weight (optionally only ``nodes``).

    Depthwise: ``group`` equals the input channel count, i.e. a weight of shape ``[C * m, 1, *k]`` with
    ``group == C``, so output channel ``o`` reads input channel ``o // m`` only.
    """
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    constants = set(weights) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    found: dict[str, list[str]] = {}
    channels: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        if (nodes is not None and node.name not in nodes) or node.input[0] in constants:
            continue
        weight = weights.get(node.input[1])
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if weight is None or len(weight.dims) < 3 or weight.dims[1] != 1 or group < 2 \
                or weight.dims[0] % group or weight.data_type not in _FLOATS:
            continue
        if channels.setdefault(node.input[0], group) != group:
            continue  # read with two different channel counts: not a channel axis we can trust
        found.setdefault(node.input[0], []).append(node.name)
    return [DepthwiseInput(t, tuple(convs), channels[t]) for t, convs in found.items()]


_FLOATS = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})


def channel_scales(maxima: np.ndarray) -> np.ndarray:
    """``s_c = max|x_c| / max_c max|x_c|``, floored at ``MIN_SCALE``; 1 for a channel never seen non-zero.

    A channel that was exactly zero on all the calibration data gives no range to equalize to: scaling it
    up would turn its first non-zero value elsewhere into one that swamps the tensor's range
    (EfficientNet-Lite0 has such ReLU6 channels), so it keeps its scale.
    """
    m = np.asarray(maxima, dtype=np.float64)
    finite = m[np.isfinite(m)]
    top = float(finite.max()) if finite.size else 0.0
    if top <= 0:
        return np.ones_like(m)
    m = np.where(np.isfinite(m), m, top)  # NaN/inf: as the largest
    return np.where(m > 0, np.maximum(m / top, MIN_SCALE), 1.0)


def shared_scale_loss_bits(maxima: Mapping[str, np.ndarray]) -> float:
    """What one per-tensor scale costs the depthwise inputs, in bits: the median over a tensor's channels
    of log2(its largest channel range / the channel's range), averaged over the tensors (0 with none).

    Equalization can win back at most this; it is how ``--equalize auto`` decides whether the equalized
    variant is worth a collection (channels :func:`channel_scales` leaves alone count as losing nothing).
    """
    losses = [float(np.median(-np.log2(channel_scales(m)))) for m in maxima.values() if np.size(m)]
    return float(np.mean(losses)) if losses else 0.0


def equalize(
    model: onnx.ModelProto, inputs: list[DepthwiseInput], maxima: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """A copy of ``model`` with each input in ``inputs`` divided per channel by its scales before its
    depthwise convs, and their weights multiplied back (``maxima``: per-channel max|x| per tensor)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights = {t.name: k for k, t in enumerate(graph.initializer)}
    nodes = {n.name: n for n in graph.node}
    position = {n.name: k for k, n in enumerate(graph.node)}
    taken = UniqueNames.of_proto(graph, node_names=False)
    inserts: list[tuple[int, onnx.NodeProto]] = []
    replaced: set[str] = set()
    for item in inputs:
        scales = channel_scales(maxima[item.tensor])
        if scales.shape != (item.channels,):
            raise ValueError(f"{item.tensor}: {scales.shape[0]} channel maxima for {item.channels} channels")
        if np.all(scales == 1.0):
            continue
        inv_name = taken.new(f"{item.tensor}_equalize_scale")
        out_name = taken.new(f"{item.tensor}_equalized")
        rank = _rank(model, item.tensor)
        inv = (1.0 / scales).reshape((1, -1) + (1,) * max(0, rank - 2))
        dtype = _dtype(model, item.tensor)
        graph.initializer.append(numpy_helper.from_array(inv.astype(dtype), inv_name))
        mul = helper.make_node("Mul", [item.tensor, inv_name], [out_name], name=taken.new(f"{out_name}/Mul"))
        vi = _info(model, item.tensor)
        if vi is not None:  # same type and shape: later passes size the new tensor without re-inferring
            graph.value_info.append(helper.make_value_info(out_name, vi.type))
        first = min(position[c] for c in item.convs)
        inserts.append((first, mul))
        scaled: dict[str, str] = {}  # convs of this input sharing a weight share its scaled copy too
        for conv in item.convs:
            node = nodes[conv]
            node.input[0] = out_name
            original = node.input[1]
            if original not in scaled:
                scaled[original] = _scaled_weight(graph, weights, original, scales, taken)
            node.input[1] = scaled[original]
            replaced.add(original)
    for index, mul in sorted(inserts, key=lambda p: p[0], reverse=True):
        graph.node.insert(index, mul)  # right before its first consumer: the graph stays sorted
    drop_unread(graph, replaced)  # last: ``weights`` holds positions in the initializer list
    return out


def _scaled_weight(graph: onnx.GraphProto, weights: dict[str, int], name: str, scales: np.ndarray,
                   taken: UniqueNames) -> str:
    """A new initializer: ``name``'s output channel ``o`` times ``scales[o // m]``; returns its name."""
    tensor = graph.initializer[weights[name]]
    w = numpy_helper.to_array(tensor)
    per_out = np.repeat(scales, w.shape[0] // scales.size).reshape((-1,) + (1,) * (w.ndim - 1))
    new_name = taken.new(f"{name}_equalized")
    graph.initializer.append(numpy_helper.from_array((w.astype(np.float64) * per_out).astype(w.dtype), new_name))
    weights[new_name] = len(graph.initializer) - 1
    return new_name


def _info(model: onnx.ModelProto, tensor: str) -> onnx.ValueInfoProto | None:
    g = model.graph
    return next((vi for vi in (*g.input, *g.value_info, *g.output) if vi.name == tensor), None)


def _rank(model: onnx.ModelProto, tensor: str) -> int:
    vi = _info(model, tensor)
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return 4  # the common NCHW case; the Mul broadcasts [1, C, 1, 1]
    return len(vi.type.tensor_type.shape.dim)


def _dtype(model: onnx.ModelProto, tensor: str) -> np.dtype:
    vi = _info(model, tensor)
    if vi is None or not vi.type.tensor_type.elem_type:
        return np.dtype(np.float32)
    return np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
