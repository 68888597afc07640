"""Materialise a QuantPlan: the one pass that inserts QuantizeLinear/DequantizeLinear."""

from onnxq.rewrite.insert_qdq import insert_qdq

__all__ = ["insert_qdq"]
