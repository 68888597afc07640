"""The comparison of a float model with its quantized version (:func:`onnxq.analysis.compare.compare`):
per-output and per-layer error, and a user metric's loss. The analysis makes it, the report renders it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OutputComparison:
    """Error of one model output over all samples; ``top1`` in percent when plausibly class scores."""

    name: str
    shape: tuple[int, ...]  # of the first sample
    sqnr_db: float
    cosine: float
    max_abs: float
    top1: float | None = None


@dataclass(frozen=True)
class LayerComparison:
    """Error of one tensor both models produce, as the quantized model's consumers read it.

    ``role``: "activation" (quantized with a Q/DQ pair), "weight" (float -> Q -> DQ initializer) or
    "float" (not quantized itself; its error comes from upstream). ``position`` is the producer's index in
    the quantized graph (topological), so sorting by it shows where the error starts.
    """

    tensor: str
    node: str
    op_type: str
    role: str
    sqnr_db: float
    cosine: float
    max_abs: float
    pre_qdq_sqnr_db: float | None
    position: int


@dataclass(frozen=True)
class MetricLoss:
    """A user metric on both models and the loss |quant - float| / |float| x 100."""

    float_score: float
    quant_score: float
    loss_pct: float


@dataclass(frozen=True)
class CompareReport:
    float_model: str
    quant_model: str
    data: str
    samples: int
    optimized: bool  # the quantized model's outputs came from an optimized onnxruntime session
    outputs: tuple[OutputComparison, ...]
    layers: tuple[LayerComparison, ...] = ()
    metric: MetricLoss | None = None
    violations: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
