"""The report of a quantization run: what was quantized, what was skipped and why, timings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from onnxq.records.choice import MethodChoice
from onnxq.records.fallback import FallbackResult
from onnxq.records.plan import Skip


@dataclass(frozen=True)
class TensorRecord:
    """One planned tensor with its solved parameters (a scale summary for per-channel weights)."""

    tensor: str
    role: str
    dtype: str
    rule: str
    axis: int | None
    scale: float  # the scale (per tensor) or the largest channel scale (per channel)
    channels: int  # 1 for per tensor
    lo: float
    hi: float
    group: str | None = None


@dataclass(frozen=True)
class QuantReport:
    model: str
    target: str
    method: str
    config: dict[str, Any]
    preprocess: tuple[str, ...]
    data: str
    samples: int
    quantized_nodes: tuple[str, ...]
    skipped: tuple[Skip, ...]
    tensors: tuple[TensorRecord, ...]
    timings: dict[str, float] = field(default_factory=dict)
    check: dict[str, float] = field(default_factory=dict)  # output similarity on the validation sample
    # feeds the data source holds when known (a feed may hold several samples: its batch dimension)
    feeds: int | None = None
    check_samples: int = 1  # samples the check ran (its first feed's batch)
    runs: str = ""  # how calibration ran the data when not one feed per run in one pass (Collection.describe)
    choice: MethodChoice | None = None  # what --method auto chose and why (None for an explicit method)
    fallback: FallbackResult | None = None  # the layers auto's fallback left in float when it was poor

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def counts(self) -> dict[str, int]:
        roles: dict[str, int] = {}
        for t in self.tensors:
            roles[t.role] = roles.get(t.role, 0) + 1
        return roles
