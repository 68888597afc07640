"""onnxq: post-training INT8 quantization of ONNX models for TensorRT and onnxruntime.

    import onnxq
    result = onnxq.quantize("model.onnx", onnxq.data.from_dir("calib/", specs),
                            onnxq.QuantConfig(activations=onnxq.ActivationSpec(method="entropy")))
    result.save("model.int8.onnx")
"""

__version__ = "0.1.0"

from onnxq.analysis.compare import compare  # noqa: E402
from onnxq.analysis.sensitivity import sensitivity  # noqa: E402
from onnxq.api import QuantResult, calibrate, prepare, quantize, quantize_with_fallback  # noqa: E402
from onnxq.calibrate.solve import solve  # noqa: E402
from onnxq.check import save_model  # noqa: E402
from onnxq.collect import data  # noqa: E402
from onnxq.collect.collectors import collect  # noqa: E402
from onnxq.config import (  # noqa: E402
    ActivationSpec,
    BatchStatistic,
    Method,
    QuantConfig,
    Target,
    WeightFormat,
    WeightMethod,
    WeightSpec,
    load_config,
)
from onnxq.errors import (  # noqa: E402
    CalibrationDataError,
    ConfigError,
    ModelLoadError,
    OnnxqError,
    OutputError,
    UnsupportedModelError,
    ValidationError,
)
from onnxq.io import load_model  # noqa: E402
from onnxq.placement import plan  # noqa: E402
from onnxq.records import QuantParams, QuantPlan  # noqa: E402
from onnxq.rewrite import insert_qdq  # noqa: E402

__all__ = [
    "ActivationSpec", "BatchStatistic", "CalibrationDataError", "ConfigError", "Method", "ModelLoadError",
    "OnnxqError", "OutputError", "QuantConfig", "QuantParams", "QuantPlan", "QuantResult", "Target",
    "UnsupportedModelError", "ValidationError", "WeightFormat", "WeightMethod", "WeightSpec", "calibrate",
    "collect", "compare", "data", "insert_qdq", "load_config", "load_model", "plan", "prepare", "quantize",
    "quantize_with_fallback", "save_model", "sensitivity", "solve",
]
