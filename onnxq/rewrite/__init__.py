"""Materialise a QuantPlan: the one pass that inserts QuantizeLinear/DequantizeLinear."""

from onnxq.rewrite.insert_qdq import QuantParams, insert_qdq

__all__ = ["QuantParams", "insert_qdq"]
