"""Fold inference-mode BatchNormalization into the Conv, ConvTranspose or Gemm that feeds it.

Why: a BatchNormalization after a convolution is a per-channel affine map, so it can be absorbed into
the convolution's weight and bias. Quantizing the folded weight is what the deployed engine runs
(TensorRT folds BN itself before choosing int8 kernels), and it removes a node that would otherwise sit
between the convolution and its activation and need its own scale.

Derivation. In inference mode BatchNormalization computes, for each channel ``c`` of axis 1::

    y_c = gamma_c * (x_c - mean_c) / sqrt(var_c + eps) + beta_c

With ``s_c = gamma_c / sqrt(var_c + eps)`` this is ``y_c = s_c * x_c + (beta_c - s_c * mean_c)``.

Conv (weight ``W[Cout, Cin/g, k...]``, output channel ``c`` is row ``c`` of ``W``, for any group
count, depthwise included)::

    x_c = sum_k W[c, k] * in_k + b_c
    y_c = sum_k (s_c * W[c, k]) * in_k + (b_c - mean_c) * s_c + beta_c
    =>  W'[c] = s_c * W[c],   b'_c = (b_c - mean_c) * s_c + beta_c      (b = 0 when Conv has no bias)

ConvTranspose (weight ``W[Cin, Cout/g, k...]``): output channel ``c = gi * Cout/g + j`` of group ``gi``
reads column ``j`` of the rows ``gi * Cin/g ... (gi + 1) * Cin/g - 1``. Viewing ``W`` as
``[g, Cin/g, Cout/g, k...]``, the scale is applied as ``W'[gi, :, j] = s[gi * Cout/g + j] * W[gi, :, j]``;
the bias is per output channel, as for Conv.

Gemm (``Y = alpha * A' @ B' + beta_g * C``, BN channel ``n`` is column ``n`` of ``Y``)::

    y_n = alpha * A' @ (s_n * B'[:, n]) + s_n * (beta_g * C_n - mean_n) + beta_n
    =>  B' scaled per column: B * s[None, :] if transB = 0 (B is [K, N]), B * s[:, None] if transB = 1;
        C' = (beta_g * C - mean) * s + beta,  beta_g' = 1   (C = 0 when absent; C may broadcast)

The fold is exact up to float rounding; it is computed in float64 and cast back to the weight dtype.

When not to fold: the BN is in training mode (``training_mode=1`` or its running statistics are read);
any BN parameter, weight or bias is not a constant initializer; the producer's output has another
consumer or is a graph output (the unnormalised value would change); channel counts disagree. Such BNs
(and standalone BNs with no foldable producer) are left as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.graph.names import UniqueNames
from onnxq.preprocess import _gs

logger = logging.getLogger(__name__)

FOLDABLE_PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm"})
_FLOAT_KINDS = frozenset("f")


@dataclass(frozen=True)
class _BnParams:
    """BatchNormalization as ``y = scale * x + shift`` per channel, with the ``mean`` it subtracts."""

    scale: np.ndarray  # s = gamma / sqrt(var + eps), float64
    mean: np.ndarray
    beta: np.ndarray


def fold_batchnorms(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with every foldable BatchNormalization folded into its producer."""
    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return model
    graph = _gs.to_graph(model)
    names = UniqueNames.of_graph(graph, node_names=False)
    folded = 0
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        reason = _fold_one(graph, bn, names)
        if reason is None:
            folded += 1
        else:
            logger.debug("BatchNormalization %r not folded: %s", bn.name, reason)
    if not folded:
        return model
    with _gs.quiet_gs():
        graph.cleanup().toposort()
    return _gs.to_model(graph, like=model)


def _fold_one(graph: gs.Graph, bn: gs.Node, names: UniqueNames) -> str | None:
    """Fold ``bn`` into its producer in place; return why not when it cannot be folded."""
    reason = _bn_unfoldable(graph, bn)
    if reason:
        return reason
    x = bn.inputs[0]
    producer = x.inputs[0]
    params = _bn_params(bn)
    if producer.op == "Gemm":
        reason = _fold_gemm(producer, params, names)
    else:
        reason = _fold_conv(producer, params, names)
    if reason:
        return reason
    y = bn.outputs[0]
    bn.inputs.clear()
    bn.outputs.clear()
    producer.outputs[0] = y
    return None


def _bn_unfoldable(graph: gs.Graph, bn: gs.Node) -> str | None:
    if not _gs.is_default_domain(bn):
        return f"domain {bn.domain!r}"
    if bn.attrs.get("training_mode", 0):
        return "training mode"
    if len(bn.inputs) != 5 or not all(_is_float_constant(t) for t in bn.inputs[1:]):
        return "scale/bias/mean/var are not constant float initializers"
    graph_outputs = {t.name for t in graph.outputs}
    for extra in bn.outputs[1:]:
        if not extra.is_empty() and (extra.outputs or extra.name in graph_outputs):
            return "running statistics are read (training mode)"
    x = bn.inputs[0]
    if isinstance(x, gs.Constant) or len(x.inputs) != 1:
        return "input is not produced by a node"
    producer = x.inputs[0]
    if producer.op not in FOLDABLE_PRODUCERS or not _gs.is_default_domain(producer):
        return f"producer is {producer.op}, not Conv/ConvTranspose/Gemm"
    if len(x.outputs) != 1 or x.name in graph_outputs:
        return f"{producer.op} output has another consumer"
    if producer.outputs[0] is not x:
        return f"input is not the first output of {producer.op}"
    return None


def _is_float_constant(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and np.asarray(tensor.values).dtype.kind in _FLOAT_KINDS


def _bn_params(bn: gs.Node) -> _BnParams:
    gamma, beta, mean, var = (np.asarray(t.values, dtype=np.float64).reshape(-1) for t in bn.inputs[1:])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    return _BnParams(scale=gamma / np.sqrt(var + eps), mean=mean, beta=beta)


def _fold_conv(conv: gs.Node, bn: _BnParams, names: UniqueNames) -> str | None:
    """W' = W * s per output channel (axis 0 for Conv, axis 1 within groups for ConvTranspose)."""
    weight = conv.inputs[1] if len(conv.inputs) > 1 else None
    if weight is None or not _is_float_constant(weight) or weight.values.ndim < 3:
        return f"{conv.op} weight is not a constant float initializer"
    w = np.asarray(weight.values, dtype=np.float64)
    groups = int(conv.attrs.get("group", 1))
    if conv.op == "Conv":
        cout = w.shape[0]
    else:
        if w.shape[0] % groups:
            return "ConvTranspose weight rows are not divisible by group"
        cout = w.shape[1] * groups
    bias = _optional_input(conv, 2)
    if bias is not None and not _is_float_constant(bias):
        return f"{conv.op} bias is not a constant float initializer"
    if bn.scale.shape != (cout,) or (bias is not None and bias.values.size != cout):
        return f"BN has {bn.scale.size} channels, {conv.op} has {cout}"
    if conv.op == "Conv":
        w_new = w * bn.scale.reshape((cout,) + (1,) * (w.ndim - 1))
    else:
        grouped = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
        s = bn.scale.reshape((groups, 1, w.shape[1]) + (1,) * (w.ndim - 2))
        w_new = (grouped * s).reshape(w.shape)
    b = np.zeros(cout) if bias is None else np.asarray(bias.values, dtype=np.float64).reshape(-1)
    b_new = (b - bn.mean) * bn.scale + bn.beta
    dtype = weight.values.dtype
    _set_input(conv, 1, w_new.astype(dtype), f"{weight.name}_bn_folded", names)
    _set_input(conv, 2, b_new.astype(dtype), f"{conv.name or weight.name}_bias_bn_folded", names)
    return None


def _fold_gemm(gemm: gs.Node, bn: _BnParams, names: UniqueNames) -> str | None:
    """B' = B * s per output column, C' = (beta_g * C - mean) * s + beta, Gemm beta = 1."""
    b_in = gemm.inputs[1]
    if not _is_float_constant(b_in) or b_in.values.ndim != 2:
        return "Gemm B is not a constant 2-D float initializer"
    trans_b = int(gemm.attrs.get("transB", 0))
    b = np.asarray(b_in.values, dtype=np.float64)
    n = b.shape[0] if trans_b else b.shape[1]
    if bn.scale.shape != (n,):
        return f"BN has {bn.scale.size} channels, Gemm has {n} output columns"
    c_in = _optional_input(gemm, 2)
    if c_in is not None and not _is_float_constant(c_in):
        return "Gemm C is not a constant float initializer"
    c = np.zeros(n) if c_in is None else np.asarray(c_in.values, dtype=np.float64)
    if c.ndim > 2 or (c.ndim >= 1 and c.shape[-1] not in (1, n)):
        return f"Gemm C of shape {c.shape} does not broadcast to {n} columns"
    b_new = b * (bn.scale[:, None] if trans_b else bn.scale[None, :])
    c_new = (float(gemm.attrs.get("beta", 1.0)) * c - bn.mean) * bn.scale + bn.beta
    dtype = b_in.values.dtype
    _set_input(gemm, 1, b_new.astype(dtype), f"{b_in.name}_bn_folded", names)
    _set_input(gemm, 2, c_new.astype(dtype), f"{gemm.name or b_in.name}_C_bn_folded", names)
    gemm.attrs["beta"] = 1.0
    return None


def _optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    if len(node.inputs) > index and not node.inputs[index].is_empty():
        return node.inputs[index]
    return None


def _set_input(node: gs.Node, index: int, values: np.ndarray, new_name: str, names: UniqueNames) -> None:
    """Give ``node`` new constant values at ``index``.

    The existing initializer is updated (keeping its name) only when this node is its sole reader;
    a shared weight gets a fresh, uniquely named copy so the other readers are unaffected.
    """
    old = _optional_input(node, index)
    if old is not None and len(old.outputs) == 1:
        old.values = values
        return
    const = gs.Constant(names.new(new_name), values)
    if len(node.inputs) > index:
        node.inputs[index] = const
    else:
        node.inputs.append(const)
