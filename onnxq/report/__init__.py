"""Records of what onnxq did, and their renderings (text, markdown, json)."""

from onnxq.report.records import QuantReport, TensorRecord

__all__ = ["QuantReport", "TensorRecord"]
