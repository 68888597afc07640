"""Similarity metrics between a float reference and a quantized result.

SQNR(dB) = 10 log10( sum(ref^2) / sum((ref - x)^2) ); identical arrays give +inf (reported as 200 dB so
JSON stays finite). Cosine is computed in float64 on the flattened arrays.
"""

from __future__ import annotations

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
