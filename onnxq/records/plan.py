"""The quantization plan: pure, JSON-serialisable data that says where Q/DQ goes and why.

:func:`onnxq.placement.plan` makes it on the float graph before calibration, so the collector sees float
activations, the user can inspect it (``onnxq inspect``), and the rewrite is a single pass with real
values. Every later stage reads it (collect, calibrate, rewrite, analysis, report), so it lives here,
below all of them, not in the stage that makes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np


class Role(str, Enum):
    ACTIVATION = "activation"
    WEIGHT = "weight"
    BIAS = "bias"


@dataclass(frozen=True)
class TensorQuantSpec:
    """One Q/DQ pair on one tensor, feeding the listed (node, input index) edges.

    ``group`` names a shared-scale group: every activation in it gets the same scale (Concat inputs and
    output, pass-through ops). ``bias_of`` is (activation tensor, weight tensor) for int32 biases whose
    scale is the product of those two scales.
    """

    tensor: str
    role: Role
    dtype: str  # "int8" | "uint8" | "int32"
    symmetric: bool
    consumers: tuple[tuple[str, int], ...]
    rule: str
    axis: int | None = None
    group: str | None = None
    bias_of: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        """Unique name of this spec (a weight shared with two axes yields two specs)."""
        if self.role is Role.ACTIVATION:
            return self.tensor
        return f"{self.tensor}@{self.role.value}{'' if self.axis is None else self.axis}"


@dataclass(frozen=True)
class Skip:
    """A node left in float, with the rule that decided it and a reason a user can act on."""

    node: str
    op_type: str
    rule: str
    reason: str


@dataclass(frozen=True)
class QuantPlan:
    """Where Q/DQ goes (``specs``), which nodes stay float and why (``skips``).

    ``values`` holds the float values of the weight tensors the specs quantize, by tensor name, so
    solving needs the plan and the statistics only, not the graph. They are references to the graph's
    arrays, not copies, and are neither compared nor serialized: a plan read back from JSON has none.
    """

    target: str
    specs: tuple[TensorQuantSpec, ...]
    skips: tuple[Skip, ...]
    quantized_nodes: tuple[str, ...]
    values: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def activations(self) -> list[TensorQuantSpec]:
        return [s for s in self.specs if s.role is Role.ACTIVATION]

    def weights(self) -> list[TensorQuantSpec]:
        return [s for s in self.specs if s.role is Role.WEIGHT]

    def biases(self) -> list[TensorQuantSpec]:
        return [s for s in self.specs if s.role is Role.BIAS]

    def spec_for(self, tensor: str, role: Role = Role.ACTIVATION) -> TensorQuantSpec | None:
        for spec in self.specs:
            if spec.tensor == tensor and spec.role is role:
                return spec
        return None

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for spec in self.activations():
            if spec.group:
                out.setdefault(spec.group, []).append(spec.tensor)
        return out

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, Enum):
                return v.value
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v

        return {
            "target": self.target,
            "specs": [{k: plain(v) for k, v in dataclasses.asdict(s).items()} for s in self.specs],
            "skips": [dataclasses.asdict(s) for s in self.skips],
            "quantized_nodes": list(self.quantized_nodes),
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> QuantPlan:
        specs = []
        for s in data["specs"]:
            s = dict(s)
            s["role"] = Role(s["role"])
            s["consumers"] = tuple((c[0], int(c[1])) for c in s["consumers"])
            if s.get("bias_of") is not None:
                s["bias_of"] = tuple(s["bias_of"])
            specs.append(TensorQuantSpec(**s))
        return QuantPlan(
            target=data["target"],
            specs=tuple(specs),
            skips=tuple(Skip(**s) for s in data["skips"]),
            quantized_nodes=tuple(data["quantized_nodes"]),
        )
