"""What the automatic float fallback chose (:mod:`onnxq.analysis.fallback`), step by step, and the
exclusion patterns that reproduce it."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from onnxq.config import FallbackRule
from onnxq.records.sensitivity import Score


@dataclass(frozen=True)
class FallbackStep:
    """One layer moved to float and the scores before and after; ``bought`` in the deciding measure."""

    node: str
    op_type: str
    before: Score
    after: Score
    bought: float


@dataclass(frozen=True)
class FallbackResult:
    rule: FallbackRule
    measure: str  # "metric" or "sqnr_db": what decided each step
    float_metric: float | None
    start: Score  # every unit quantized (gated model)
    final: Score  # after the fallback (gated model)
    steps: tuple[FallbackStep, ...]
    met: bool  # the rule's targets hold for ``final`` (always False for a rule without target)
    evaluations: int
    exact: bool = False  # the gated runs were exact (no graph optimization), not an estimate
    verified: Score | None = None  # the rewritten model, evaluated exactly
    verified_met: bool | None = None
    eval_data: str = ""  # what the search and the verification ran on
    eval_samples: int = 0

    @property
    def float_nodes(self) -> tuple[str, ...]:
        return tuple(s.node for s in self.steps)

    @property
    def exclude_patterns(self) -> tuple[str, ...]:
        return exclude_patterns(self.float_nodes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["float_nodes"] = list(self.float_nodes)
        out["exclude_patterns"] = list(self.exclude_patterns)
        return out


def exclude_patterns(nodes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Anchored, escaped regular expressions matching exactly ``nodes`` (for QuantConfig.exclude_nodes)."""
    return tuple(f"^{re.escape(n)}$" for n in nodes)
