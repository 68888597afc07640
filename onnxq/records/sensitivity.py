"""The sensitivity of each quantized layer (:mod:`onnxq.analysis.sensitivity` measures it; the report,
the fallback and the CLI read it): scores of quantization subsets against the float model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Score:
    """A configuration's error against float: worst-output SQNR (dB) and cosine, and the user metric."""

    sqnr_db: float
    cosine: float
    metric: float | None = None

    def measure(self, use_metric: bool) -> float:
        """The number rankings use: the metric when there is one, else the SQNR (both: higher is better)."""
        if use_metric:
            if self.metric is None:
                raise ValueError("this score has no metric value")
            return float(self.metric)
        return self.sqnr_db


@dataclass(frozen=True)
class LayerSensitivity:
    """One unit: its score alone quantized (``only``) and with all others quantized (``all_but``)."""

    node: str
    op_type: str
    position: int  # order in the plan (topological)
    only: Score | None
    all_but: Score | None
    gain: float | None  # measure(all_but) - measure(all quantized): what leaving it in float buys
    sqnr_gain: float | None  # the same in output SQNR (dB); breaks ties of a coarse metric
    loss: float | None  # metric(float) - metric(only), or -SQNR(only): what quantizing it alone costs


@dataclass(frozen=True)
class SensitivityReport:
    """Layers ranked most sensitive first (by ``gain`` when leave-one-out ran, else by ``loss``)."""

    measure: str  # "sqnr_db" or "metric"
    samples: int
    float_metric: float | None
    all_quantized: Score
    layers: tuple[LayerSensitivity, ...]
    evaluations: int
    seconds: float
    model: str = ""
    data: str = ""  # the evaluation data
    calibration: str = ""  # the calibration data, samples and how it ran ("" with given statistics)
    timings: dict[str, float] = field(default_factory=dict)
    workers: int = 1  # configurations evaluated in parallel
    exact: bool = False  # unoptimized float kernels: bit-exact fake quantization

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
