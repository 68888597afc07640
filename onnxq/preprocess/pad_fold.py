"""Fold a zero-valued constant Pad into the Conv that reads it.

``Pad(x, pads) -> Conv`` computes the same as ``Conv`` with its ``pads`` attribute increased by the
spatial part of ``pads`` when the Pad is in constant mode with value 0, pads only spatial axes, adds no
negative padding, and the Conv does not use ``auto_pad``. Exporters emit such Pads for "same" padding
(TensorFlow-style EfficientNet ports, timm ``static_padding``). Folding them matters for quantization:
a standalone Pad between two quantized convs needs its own Q/DQ pair (onnxruntime has no int8 Pad
kernel, so each costs a dequantize, a float pad and a quantize) and TensorRT sees an extra layer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxq.graph.usage import drop_unread


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values of the small constant inputs of Pad nodes (pads, value); weights are never decoded."""
    wanted = {name for n in model.graph.node if n.op_type == "Pad" for name in n.input[1:]}
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in wanted}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in wanted and node.attribute \
                and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _foldable_pads(pad: onnx.NodeProto, consts: dict[str, np.ndarray]) -> list[int] | None:
    """Spatial (begin..., end...) pads of a zero constant Pad on NC... data, else None."""
    mode = _attr(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if len(pad.input) < 2 or pad.input[1] not in consts:
        return None
    if len(pad.input) > 2 and pad.input[2]:
        value = consts.get(pad.input[2])
        if value is None or np.any(value != 0):
            return None
    if len(pad.input) > 3 and pad.input[3]:
        return None  # explicit axes: rare, keep the Pad
    pads = [int(v) for v in np.asarray(consts[pad.input[1]]).ravel()]
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if rank < 3 or any(v < 0 for v in pads) or begin[:2] != [0, 0] or end[:2] != [0, 0]:
        return None
    return begin[2:] + end[2:]


def fold_pads(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return a copy with foldable Pad -> Conv pairs merged, and the number folded (``model`` itself and
    0 when none folds: copying the weights for nothing cost a transformer 30 ms)."""
    folds = _folds(model)
    if not folds:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    pads = [graph.node[p] for p in folds]
    for p, (c, merged) in folds.items():
        pad, conv = graph.node[p], graph.node[c]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(onnx.helper.make_attribute("pads", merged))
        conv.input[0] = pad.input[0]
    orphaned = {name for pad in pads for name in pad.input[1:] if name}
    for pad in pads:
        graph.node.remove(pad)
    # The folded Pads' pads and value are dead now unless something else reads them; onnxruntime drops
    # dead initializers and then cannot take them in memory (onnxq.runtime), so none may stay behind.
    drop_unread(graph, orphaned)
    return out, len(pads)


def _folds(model: onnx.ModelProto) -> dict[int, tuple[int, list[int]]]:
    """{index of a Pad node: (index of the Conv it folds into, the Conv's merged pads)}."""
    graph = model.graph
    consts = _constants(model)
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(i)
    outputs = {o.name for o in graph.output}
    folds = {}
    for p, pad in enumerate(graph.node):
        if pad.op_type != "Pad" or pad.output[0] in outputs:
            continue
        users = readers.get(pad.output[0], [])
        conv = graph.node[users[0]] if len(users) == 1 else None
        if conv is None or conv.op_type != "Conv" or conv.input[0] != pad.output[0]:
            continue
        if _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        extra = _foldable_pads(pad, consts)
        if extra is None:
            continue
        spatial = len(extra) // 2
        current = list(_attr(conv, "pads", [0] * (2 * spatial)))
        if len(current) != len(extra):
            continue
        folds[p] = (users[0], [a + b for a, b in zip(current, extra)])
    return folds
