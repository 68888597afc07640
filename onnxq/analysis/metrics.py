"""Similarity metrics between a float reference and a quantized result.

SQNR(dB) = 10 log10( sum(ref^2) / sum((ref - x)^2) ); identical arrays give +inf (reported as 200 dB so
JSON stays finite). Cosine is computed in float64 on the flattened arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
    """A [batch, classes] (or [batch, 1, classes]) output with at least 2 classes; not a map such as
    [1, 1, H, W]."""
    return len(shape) in (2, 3) and all(d == 1 for d in shape[1:-1]) and shape[-1] >= 2


UNIT_NORM_TOL = 1e-3  # |‖row‖₂ - 1| below this on every row: an L2-normalised embedding


def plausibly_class_scores(value: np.ndarray) -> bool:
    """True when ``value`` (one feed's output) is plausibly class scores, so top-1 agreement means something.

    That is a float [batch, classes] (or [batch, 1, classes]) output with at least 2 classes whose rows are
    not all of unit L2 norm. The argmax of a row is a decision only for class scores (logits or
    probabilities); a unit-norm row is an embedding, compared by cosine (sentence-transformers models
    L2-normalise theirs, MiniLM included), and the agreement of its largest coordinate measures nothing.
    Embeddings left unnormalised cannot be told from logits by value: use ``--min-cosine`` for them.
    """
    value = np.asarray(value)
    if value.dtype.kind != "f" or not looks_like_logits(value.shape) or value.size == 0:
        return False
    rows = value.reshape(-1, value.shape[-1]).astype(np.float64)
    # a confident softmax row ([0.9999, 0.0001]) has an L2 norm near 1 too: rows on the probability simplex
    # (non-negative, summing to 1) are class scores whatever their norm
    if np.all(rows >= 0) and np.all(np.abs(rows.sum(axis=1) - 1.0) < UNIT_NORM_TOL):
        return True
    norms = np.linalg.norm(rows, axis=1)
    return not bool(np.all(np.abs(norms - 1.0) < UNIT_NORM_TOL))


def loss_pct(float_score: float, quant_score: float) -> float:
    """|quant - float| / |float| x 100; 0 when both are 0, inf when only the float score is 0."""
    if quant_score == float_score:
        return 0.0
    if float_score == 0.0:
        return float("inf")
    return abs(quant_score - float_score) / abs(float_score) * 100.0


@dataclass(frozen=True)
class ErrorSums:
    """Running sums from which SQNR, cosine, max-abs and top-1 agreement over many samples follow.

    Why sums: SQNR and cosine over a whole evaluation set are ratios of sums over all its elements
    (10 log10(sum ref^2 / sum (ref - x)^2), ref.x / (|ref| |x|)), so a comparison can add each batch and
    drop it: memory stays O(1) per tensor whatever the number of samples. All sums are float64.
    """

    elements: int = 0
    ref_sq: float = 0.0  # sum ref^2
    x_sq: float = 0.0  # sum x^2
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
        # 1 - cos from the error sum (|a-b|^2 = |a|^2 + |b|^2 - 2 a.b): near cos = 1 the plain dot / norms
        # loses the small difference to rounding in the large sums; this form keeps it.
        na, nb = np.sqrt(self.ref_sq), np.sqrt(self.x_sq)
        return float(np.clip(1.0 - (self.err_sq - (na - nb) ** 2) / (2.0 * na * nb), -1.0, 1.0))

    @property
    def top1(self) -> float | None:
        """Fraction of rows whose argmax agrees, or None when no row was accumulated with top1=True."""
        return self.top1_hits / self.rows if self.rows else None


_CHUNK = 4096


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """sum(x * y) of two flat arrays: float32 products summed in chunks of 4096, chunk sums in float64.

    Why: converting whole activations to float64 costs more than running the model (PP-OCR det: 20 s
    against 5 s per image); chunked float32 sums stay within ~1e-7 relative of the float64 result.
    """
    if x.dtype != np.float32 or y.dtype != np.float32:
        return float(np.dot(x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)))
    n = x.size // _CHUNK * _CHUNK
    with np.errstate(over="ignore", invalid="ignore"):
        rows = np.einsum("ij,ij->i", x[:n].reshape(-1, _CHUNK), y[:n].reshape(-1, _CHUNK))
        head = rows.sum(dtype=np.float64)
    if not np.isfinite(head):  # float32 products overflow (e.g. -3.4e38 attention masks): redo in float64
        return float(np.dot(x.astype(np.float64), y.astype(np.float64)))
    return float(head + np.dot(x[n:].astype(np.float64), y[n:].astype(np.float64)))


def accumulate(sums: ErrorSums, ref: np.ndarray, x: np.ndarray, *, top1: bool = False) -> ErrorSums:
    """``sums`` plus one more pair (reference, approximation) of equal shape; ``top1`` also counts argmax
    agreement over rows (last axis = classes)."""
    ref = np.asarray(ref)
    x = np.asarray(x)
    if ref.shape != x.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {x.shape}")
    fast = ref.dtype == np.float32 and x.dtype == np.float32
    a = ref.ravel() if fast else ref.astype(np.float64).ravel()
    b = x.ravel() if fast else x.astype(np.float64).ravel()
    err = a - b
    rows, hits = 0, 0
    if top1 and ref.ndim >= 1 and ref.size:
        classes = ref.shape[-1]
        rows = ref.size // classes
        hits = int(np.count_nonzero(ref.reshape(-1, classes).argmax(-1) == x.reshape(-1, classes).argmax(-1)))
    return ErrorSums(
        elements=sums.elements + a.size,
        ref_sq=sums.ref_sq + _dot(a, a),
        x_sq=sums.x_sq + _dot(b, b),
        err_sq=sums.err_sq + _dot(err, err),
        max_abs=max(sums.max_abs, float(max(err.max(), -err.min()))) if err.size else sums.max_abs,
        rows=sums.rows + rows,
        top1_hits=sums.top1_hits + hits,
    )


def output_similarity(float_outputs: Sequence[np.ndarray], quant_outputs: Sequence[np.ndarray]) -> dict[str, float]:
    """Worst-output cosine and SQNR of a quantized model's outputs against the float model's on one feed."""
    pairs = [(x, y) for x, y in zip(float_outputs, quant_outputs) if np.issubdtype(np.asarray(x).dtype, np.floating)]
    if not pairs:
        return {}
    return {
        "output_cosine": min(cosine(x, y) for x, y in pairs),
        "output_sqnr_db": min(sqnr_db(x, y) for x, y in pairs),
    }
