"""Similarity metrics between a float reference and a quantized result.

SQNR(dB) = 10 log10( sum(ref^2) / sum((ref - x)^2) ); identical arrays give +inf (reported as 200 dB so
JSON stays finite). Cosine is computed in float64 on the flattened arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxq import runtime

SQNR_CAP_DB = 200.0


def sqnr_db(ref: np.ndarray, x: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64).ravel()
    x = np.asarray(x, dtype=np.float64).ravel()
    noise = float(np.sum((ref - x) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(min(SQNR_CAP_DB, 10.0 * np.log10(signal / noise)))


def cosine(ref: np.ndarray, x: np.ndarray) -> float:
    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(x, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def max_abs(ref: np.ndarray, x: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(ref, np.float64) - np.asarray(x, np.float64)))) if np.size(ref) else 0.0


def top1_agreement(ref: np.ndarray, x: np.ndarray) -> float:
    """Fraction of rows (last axis = classes) whose argmax agrees."""
    ref = np.asarray(ref).reshape(-1, np.shape(ref)[-1])
    x = np.asarray(x).reshape(-1, np.shape(x)[-1])
    return float(np.mean(ref.argmax(-1) == x.argmax(-1)))


def looks_like_logits(shape: tuple[int, ...]) -> bool:
    """A [batch, classes] (or [batch, 1, classes]) output with at least 2 classes."""
    dims = [d for d in shape if d != 1]
    return len(shape) >= 2 and len(dims) <= 2 and shape[-1] >= 2


@dataclass(frozen=True)
class ErrorSums:
    """Running sums from which SQNR, cosine, max-abs and top-1 agreement over many samples follow.

    Why sums: SQNR and cosine over a whole evaluation set are ratios of sums over all its elements
    (10 log10(sum ref^2 / sum (ref - x)^2), dot / (|ref| |x|)), so a comparison can add each batch and
    drop it: memory stays O(1) per tensor whatever the number of samples. All sums are float64.
    """

    elements: int = 0
    ref_sq: float = 0.0  # sum ref^2
    x_sq: float = 0.0  # sum x^2
    dot: float = 0.0  # sum ref * x
    err_sq: float = 0.0  # sum (ref - x)^2
    max_abs: float = 0.0
    rows: int = 0  # top-1 rows seen (only when accumulated with top1=True)
    top1_hits: int = 0

    @property
    def sqnr_db(self) -> float:
        if self.err_sq == 0.0:
            return SQNR_CAP_DB
        if self.ref_sq == 0.0:
            return -SQNR_CAP_DB
        return float(min(SQNR_CAP_DB, 10.0 * np.log10(self.ref_sq / self.err_sq)))

    @property
    def cosine(self) -> float:
        if self.ref_sq == 0.0 and self.x_sq == 0.0:
            return 1.0
        if self.ref_sq == 0.0 or self.x_sq == 0.0:
            return 0.0
        return float(self.dot / np.sqrt(self.ref_sq * self.x_sq))

    @property
    def top1(self) -> float | None:
        """Fraction of rows whose argmax agrees, or None when no row was accumulated with top1=True."""
        return self.top1_hits / self.rows if self.rows else None


def accumulate(sums: ErrorSums, ref: np.ndarray, x: np.ndarray, *, top1: bool = False) -> ErrorSums:
    """``sums`` plus one more pair (reference, approximation) of equal shape; ``top1`` also counts argmax
    agreement over rows (last axis = classes)."""
    ref = np.asarray(ref)
    x = np.asarray(x)
    if ref.shape != x.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {x.shape}")
    a = ref.astype(np.float64, copy=False).ravel()
    b = x.astype(np.float64, copy=False).ravel()
    err = a - b
    rows, hits = 0, 0
    if top1 and ref.ndim >= 1 and ref.size:
        classes = ref.shape[-1]
        rows = ref.size // classes
        hits = int(np.count_nonzero(ref.reshape(-1, classes).argmax(-1) == x.reshape(-1, classes).argmax(-1)))
    return ErrorSums(
        elements=sums.elements + a.size,
        ref_sq=sums.ref_sq + float(a @ a),
        x_sq=sums.x_sq + float(b @ b),
        dot=sums.dot + float(a @ b),
        err_sq=sums.err_sq + float(err @ err),
        max_abs=max(sums.max_abs, float(np.max(np.abs(err)))) if err.size else sums.max_abs,
        rows=sums.rows + rows,
        top1_hits=sums.top1_hits + hits,
    )


def output_similarity(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, feed: dict) -> dict[str, float]:
    """Worst-output cosine and SQNR of ``quant_model`` against ``float_model`` on one feed."""
    a = runtime.run(runtime.make_session(float_model), feed)
    b = runtime.run(runtime.make_session(quant_model), feed)
    pairs = [(x, y) for x, y in zip(a, b) if np.issubdtype(np.asarray(x).dtype, np.floating)]
    if not pairs:
        return {}
    return {
        "output_cosine": min(cosine(x, y) for x, y in pairs),
        "output_sqnr_db": min(sqnr_db(x, y) for x, y in pairs),
    }
