"""Records the stages exchange: frozen data every stage may import; this package imports no stage.

One module per producer: ``plan`` (placement's QuantPlan, read by every later stage), ``params`` (what
calibration solves), ``report`` (a quantization run), ``compare``, ``sensitivity`` and ``fallback`` (what
the analyses measure and the report renders). A record lives here rather than in the stage that makes
it, so a consumer never imports a stage above it to read a result (see tests/unit/core/test_layering.py).
"""

from onnxq.records.choice import MethodChoice, OutputFigure
from onnxq.records.compare import CompareReport, LayerComparison, MetricLoss, OutputComparison
from onnxq.records.fallback import FallbackResult, FallbackStep, exclude_patterns
from onnxq.records.params import QuantParams
from onnxq.records.plan import QuantPlan, Role, Skip, TensorQuantSpec
from onnxq.records.report import QuantReport, TensorRecord
from onnxq.records.sensitivity import LayerSensitivity, Score, SensitivityReport

__all__ = [
    "CompareReport", "FallbackResult", "FallbackStep", "LayerComparison", "LayerSensitivity", "MethodChoice", "MetricLoss",
    "OutputComparison", "OutputFigure", "QuantParams", "QuantPlan", "QuantReport", "Role", "Score", "SensitivityReport",
    "Skip", "TensorQuantSpec", "TensorRecord", "exclude_patterns",
]
