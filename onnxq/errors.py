"""Errors onnxq raises on purpose.

Every error a user can cause is an ``OnnxqError`` whose message is one line that names the problem and
the fix. The CLI prints that line (no traceback) and exits with ``exit_code``: 2 for bad input or usage,
1 for a failure while working (which is onnxq's fault, e.g. a model that failed validation).
"""

from __future__ import annotations


class OnnxqError(Exception):
    """Base class: a problem with a one-line explanation for the user."""

    exit_code: int = 2


class ConfigError(OnnxqError):
    """An option or config file value is invalid."""


class ModelLoadError(OnnxqError):
    """The model file is missing, unreadable or not an ONNX model."""


class UnsupportedModelError(OnnxqError):
    """The model is a valid ONNX file but onnxq cannot quantize it (op, opset, domain...)."""


class CalibrationDataError(OnnxqError):
    """Calibration or evaluation data does not match the model or cannot be read."""


class OutputError(OnnxqError):
    """The output path cannot be written (same as input, unwritable folder...)."""


class ValidationError(OnnxqError):
    """A model onnxq produced failed validation. This is a bug in onnxq, never a valid output."""

    exit_code = 1


class QualityGateError(OnnxqError):
    """The quantized model misses a quality bound the user set (e.g. quantize --min-sqnr): nothing was
    written. Exit 1, like a compare tolerance: the run worked, the result is not good enough."""

    exit_code = 1


class SessionLoadError(UnsupportedModelError):
    """onnxruntime refused to build a session on a model. Raised as the user's fault (exit 2); a caller
    that built the graph itself turns it into an InternalError when the user's model loads as given."""


class InternalError(OnnxqError):
    """onnxq failed on a graph it built itself (preprocessed, equalized, gated) from a model that is fine
    as given: a bug in onnxq. The message starts with "internal error" and asks for a report."""

    exit_code = 1


def one_line(exc: BaseException) -> str:
    """First line of an exception's message, bounded, for one-line error reports."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
