"""Helpers that tests and users share: tiny models from text, numeric checks, op counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx.parser


def model_from_text(text: str, *, weights: dict[str, np.ndarray] | None = None, seed: int = 0) -> onnx.ModelProto:
    """Parse ONNX text, name unnamed nodes (``<Op>_<k>``); initializers named in ``weights`` are added (random float32 for shapes given as tuples).

    ``weights`` values may be arrays or shape tuples (filled with seeded standard-normal float32).
    """
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(seed)
    for name, value in (weights or {}).items():
        array = rng.standard_normal(value).astype(np.float32) if isinstance(value, tuple) else np.asarray(value)
        model.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
    onnx.checker.check_model(model)
    from onnxq.preprocess.names import name_nodes

    return onnx.shape_inference.infer_shapes(name_nodes(model)[0])


def count_ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def dq_inputs(model: onnx.ModelProto) -> dict[str, list[bool]]:
    """For each node name: which inputs come from a DequantizeLinear."""
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        out[node.name] = [bool(i) and i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input]
    return out


def assert_numerically_close(a: np.ndarray, b: np.ndarray, *, min_sqnr_db: float) -> None:
    from onnxq.analysis.metrics import sqnr_db

    value = sqnr_db(a, b)
    assert value >= min_sqnr_db, f"SQNR {value:.2f} dB below {min_sqnr_db} dB"
