"""Bias correction: the expected output shift a quantized weight causes, and how to cancel it (pure math).

Quantizing a weight ``W`` to ``W_q = W + dW`` shifts the output of a linear op by ``op(x, dW)``. That
error has a non-zero mean over the data whenever the inputs do (ReLU/ReLU6 outputs, images), and a
per-channel mean error is not noise that later layers average away: it is a bias that every following
layer sees and propagates (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and
Bias Correction", section 4.2; PPQ ``BiasCorrectionPass``; Quark ``bias_correction``). Since the op is
linear in ``x`` for a fixed weight,

    E[op(x, dW)] = op-shaped contraction of dW with the input means,

so subtracting that per-output-channel vector from the (float) bias cancels the mean error exactly,
for the data the means were measured on.

Conv needs more than the per-channel mean of ``x``: near the borders a kernel tap reads padding, so the
mean seen by tap ``t`` of channel ``c`` differs from the channel mean. The exact statistic is the *tap
mean* ``M[c, t]``: the mean, over samples and output positions, of the input value tap ``t`` reads
(padding zeros included) - the mean of the im2col matrix. Then for output channel ``o`` of group ``g``

    shift[o] = sum_{c in g, t} dW[o, c, t] * M[c, t]

which is exact for any padding, stride, dilation and grouping (depthwise included). Gemm and MatMul
need the mean of ``x`` over every axis but the reduction axis K: ``shift = mean_x @ dW``.

``InputMoments`` are running means that merge across batches and across inputs of different spatial
size (weighted by the number of output positions), so any data source gives the same result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from onnxq.errors import UnsupportedModelError

CORRECTABLE_OPS = frozenset({"Conv", "Gemm", "MatMul"})


@dataclass(frozen=True)
class InputMoments:
    """Running mean of what a weighted op's weight multiplies: Conv ``[C, taps]``, Gemm/MatMul ``[K]``.

    ``mean_q`` is the same mean of the *fake-quantized* input (when the input is quantized), so the
    correction also cancels the mean error of activation rounding and clipping at this op.
    ``count`` is the number of rows averaged (samples x output positions), for merging.
    """

    mean: np.ndarray
    count: int
    mean_q: np.ndarray | None = None


def merge_moments(a: InputMoments | None, b: InputMoments) -> InputMoments:
    """Count-weighted mean of two moments of the same op (``a`` may be None: start of a stream)."""
    if a is None or a.count == 0:
        return b
    if a.mean.shape != b.mean.shape or (a.mean_q is None) != (b.mean_q is None):
        raise UnsupportedModelError(
            f"input moments of shapes {a.mean.shape} and {b.mean.shape} cannot merge: the op changed between "
            "batches; collect the means of one model only"
        )
    n = a.count + b.count
    wa, wb = a.count / n, b.count / n
    mean_q = None if a.mean_q is None else a.mean_q * wa + b.mean_q * wb
    return InputMoments(a.mean * wa + b.mean * wb, n, mean_q)


@dataclass(frozen=True)
class ConvGeometry:
    """Conv attributes that decide which input value each kernel tap reads."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # begins then ends, ONNX order
    auto_pad: str = "NOTSET"

    @staticmethod
    def from_attrs(attrs: dict, kernel: tuple[int, ...]) -> ConvGeometry:
        n = len(kernel)
        auto_pad = attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        return ConvGeometry(
            kernel=tuple(int(k) for k in kernel),
            strides=tuple(int(s) for s in attrs.get("strides", [1] * n)),
            dilations=tuple(int(d) for d in attrs.get("dilations", [1] * n)),
            pads=tuple(int(p) for p in attrs.get("pads", [0] * (2 * n))),
            auto_pad=auto_pad,
        )

    def resolved_pads(self, spatial: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """(begins, ends) padding for an input of ``spatial`` size, resolving ``auto_pad`` as ONNX does."""
        n = len(self.kernel)
        if self.auto_pad in ("NOTSET", ""):
            return list(self.pads[:n]), list(self.pads[n:])
        if self.auto_pad == "VALID":
            return [0] * n, [0] * n
        begins, ends = [], []
        for size, k, s, d in zip(spatial, self.kernel, self.strides, self.dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, big = total // 2, total - total // 2
            begins.append(big if self.auto_pad == "SAME_LOWER" else small)
            ends.append(small if self.auto_pad == "SAME_LOWER" else big)
        return begins, ends


def conv_tap_means(x: np.ndarray, geometry: ConvGeometry) -> tuple[np.ndarray, int]:
    """Tap means ``[C, prod(kernel)]`` of a batch ``x`` of shape ``[N, C, *spatial]``, and the row count.

    Tap ``t`` reads, over all output positions, a strided window of the zero-padded input; padding adds
    zeros to the sum, so only the window's part inside the input is summed.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    n_spatial = len(geometry.kernel)
    if x.ndim != n_spatial + 2:
        raise UnsupportedModelError(
            f"conv input of rank {x.ndim} does not match a {n_spatial}-D kernel; check the model's shapes"
        )
    spatial = tuple(x.shape[2:])
    begins, ends = geometry.resolved_pads(spatial)
    g = geometry
    out_sizes = [
        (size + b + e - (k - 1) * d - 1) // s + 1
        for size, b, e, k, s, d in zip(spatial, begins, ends, g.kernel, g.strides, g.dilations)
    ]
    if min(out_sizes) <= 0:
        raise UnsupportedModelError(f"conv input {x.shape} is smaller than its kernel {geometry.kernel}")
    count = int(x.shape[0] * np.prod(out_sizes))
    if g.kernel == (1,) * n_spatial and g.strides == (1,) * n_spatial and out_sizes == list(spatial):
        # pointwise conv (most convs of mobile nets): its one tap reads every value once
        sums = np.add.reduce(x.reshape(x.shape[0], x.shape[1], -1), axis=2).astype(np.float64).sum(axis=0)
        return sums[:, None] / count, count
    # The window of a tap is a product of one strided range per axis, so its sum separates into one
    # contraction per spatial axis with a 0/1 matrix (which positions each kernel offset reads): one BLAS
    # matmul per axis whatever the kernel size (per-tap slicing cost ~1 ms per depthwise conv). The first
    # contraction (the full-size one) runs in the input's float dtype, the small rest in float64.
    sums = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    for i in reversed(range(n_spatial)):
        window = _window_matrix(g.kernel[i], g.dilations[i], g.strides[i], begins[i], spatial[i], out_sizes[i])
        moved = np.moveaxis(sums, 2 + i, -1)  # a copy only after the first contraction, when it is small
        flat = moved.reshape(-1, moved.shape[-1]) @ window.astype(moved.dtype, copy=False)  # 2-D: one GEMM
        sums = flat.reshape(*moved.shape[:-1], window.shape[1]).astype(np.float64, copy=False)
    sums = sums.sum(axis=0)  # [C, K_last, ..., K_first]: the kernel axes came out last-first
    taps = sums.transpose(0, *range(n_spatial, 0, -1)).reshape(sums.shape[0], -1)
    return taps / count, count


@functools.lru_cache(maxsize=256)
def _window_matrix(kernel: int, dilation: int, stride: int, begin: int, size: int, outputs: int) -> np.ndarray:
    """``[size, kernel]`` 0/1 float64: entry (p, k) is 1 when kernel offset k reads input position p."""
    window = np.zeros((size, kernel))
    for k in range(kernel):
        rng = _tap_range(k, dilation, stride, begin, size, outputs)
        if rng is not None:
            window[rng, k] = 1.0
    window.flags.writeable = False
    return window


def _tap_range(offset: int, dilation: int, stride: int, begin: int, size: int, outputs: int) -> slice | None:
    """Input positions one kernel offset reads along one axis over all outputs (padding excluded)."""
    start = offset * dilation - begin  # input position read at output 0
    first = -(start // stride) if start < 0 else 0  # ceil(-start / stride): first output inside
    last = min(outputs - 1, (size - 1 - start) // stride)
    if last < first:
        return None
    return slice(start + first * stride, start + last * stride + 1, stride)


def matmul_means(x: np.ndarray, *, trans: bool = False) -> tuple[np.ndarray, int]:
    """Mean of ``x`` over every axis but the reduction axis K (the last; the first of a transposed 2-D A)."""
    x = np.asarray(x, dtype=np.float64)
    if trans:
        x = x.T
    rows = x.reshape(-1, x.shape[-1])
    return rows.mean(axis=0), int(rows.shape[0])


def conv_expected(w: np.ndarray, mean: np.ndarray, group: int = 1) -> np.ndarray:
    """``E[conv(x, w)]`` per output channel (no bias) from the tap means of ``x``; ``w``: ``[O, C/g, *k]``."""
    w = np.asarray(w, dtype=np.float64)
    out_ch, in_per_group = w.shape[:2]
    taps = int(np.prod(w.shape[2:], dtype=np.int64))
    m = np.asarray(mean, dtype=np.float64)
    if out_ch % group or m.shape != (in_per_group * group, taps):
        raise UnsupportedModelError(
            f"conv weight {w.shape} with group={group} does not match input means {m.shape}"
        )
    d = w.reshape(group, out_ch // group, in_per_group, taps)
    return np.einsum("goct,gct->go", d, m.reshape(group, in_per_group, taps)).reshape(out_ch)


def matmul_expected(w: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``E[x @ w]`` for a 2-D weight ``[K, N]`` (Gemm's B already transposed) from the mean of ``x``."""
    w = np.asarray(w, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    if w.ndim != 2 or m.shape != (w.shape[0],):
        raise UnsupportedModelError(f"weight {w.shape} does not match input means {m.shape}")
    return m @ w


def expected_output(op: str, attrs: dict, w: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``E[op(x, w)]`` per output channel, without bias, from the input means (linear in both)."""
    if op == "Conv":
        return conv_expected(w, mean, int(attrs.get("group", 1)))
    if op == "Gemm":
        b = np.asarray(w).T if attrs.get("transB", 0) else w
        return float(attrs.get("alpha", 1.0)) * matmul_expected(b, mean)
    if op == "MatMul":
        return matmul_expected(w, mean)
    raise UnsupportedModelError(f"bias correction supports {sorted(CORRECTABLE_OPS)}, not {op}")


def output_shift(op: str, attrs: dict, w: np.ndarray, w_q: np.ndarray, moments: InputMoments) -> np.ndarray:
    """Expected per-output-channel error ``E[op(x_q, w_q)] - E[op(x, w)]`` of the quantized op.

    Without ``moments.mean_q`` the input is taken as unquantized (``x_q = x``): weight error only.
    Written as ``op(m_q, w_q - w) + op(m_q - m, w)`` so it is exactly zero when nothing is quantized.
    Gemm includes ``alpha`` (the caller divides by ``beta`` for the C input).
    """
    w64 = np.asarray(w, dtype=np.float64)
    dw = np.asarray(w_q, dtype=np.float64) - w64
    if moments.mean_q is None:
        return expected_output(op, attrs, dw, moments.mean)
    shift = expected_output(op, attrs, dw, moments.mean_q)
    return shift + expected_output(op, attrs, w64, np.asarray(moments.mean_q) - np.asarray(moments.mean))


def corrected_bias(bias: np.ndarray | None, shift: np.ndarray, *, scale: float = 1.0) -> np.ndarray:
    """``bias - shift / scale`` in the bias dtype (a missing bias is zero); ``scale`` is Gemm's beta."""
    shift = np.asarray(shift, dtype=np.float64) / scale
    if bias is None:
        return (-shift).astype(np.float32)
    b = np.asarray(bias)
    return (b.astype(np.float64) - shift.reshape(b.shape)).astype(b.dtype)
