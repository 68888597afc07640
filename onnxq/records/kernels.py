"""Which kernel runs each weighted or recurrent node when onnxq writes onnxruntime's integer operators.

Dynamic quantization (``--mode dynamic``) and the recurrent layers of the ort-cpu target replace nodes by
onnxruntime contrib kernels that quantize their activations at run time (no calibrated range). One
:class:`KernelChoice` per candidate node says what was written and why, for the plan and the report.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT = "float"


@dataclass(frozen=True)
class KernelChoice:
    """``node`` (of ``op_type``) runs as ``kernel`` (``"float"``: left as it is) with ``weights``
    (e.g. ``"int8 per-channel, 7-bit"``); ``rule`` names the decision, ``reason`` says why."""

    node: str
    op_type: str
    kernel: str
    weights: str
    rule: str
    reason: str

    @property
    def quantized(self) -> bool:
        return self.kernel != FLOAT


def weights_text(per_channel: bool, qmax: int) -> str:
    """How the weights of a quantized kernel are stored: ``int8 per-channel, range [-63, 63]``."""
    grid = "" if qmax == 127 else f", range [-{qmax}, {qmax}]"
    return f"int8 {'per-channel' if per_channel else 'per-tensor'}{grid}"
