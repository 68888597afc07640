"""onnxq.runtime: sessions built with the big initializers handed over in memory match onnxruntime's own."""

from __future__ import annotations

import gc

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxq import runtime


def _model() -> onnx.ModelProto:
    """x[2, 64] -> MatMul W (32 KB float32) -> + b (float16, 4 KB, cast) -> + c (bfloat16, raw, cast)
    -> Reshape by a small int64 shape; plus an int64 gather table of 8 KB."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    b = rng.standard_normal(2048).astype(np.float16)
    c32 = rng.standard_normal((1, 128)).astype(np.float32)
    c_raw = (c32.view(np.uint32) >> 16).astype(np.uint16).tobytes()  # bfloat16: numpy cannot hold it
    table = np.arange(1024, dtype=np.int64)
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "B"),
        helper.make_tensor("C", TensorProto.BFLOAT16, [1, 128], c_raw, raw=True),
        numpy_helper.from_array(np.array([4, 64], np.int64), "shape"),
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([5, 7], np.int64), "idx"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Slice", ["B", "s0", "s1"], ["b128"]),
        helper.make_node("Cast", ["b128"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["C"], ["cf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["m", "bf"], ["a"]),
        helper.make_node("Add", ["a", "cf"], ["a2"]),
        helper.make_node("Reshape", ["a2", "shape"], ["y"]),
        helper.make_node("Gather", ["table", "idx"], ["g"], axis=0),
    ]
    inits += [numpy_helper.from_array(np.array([0], np.int64), "s0"),
              numpy_helper.from_array(np.array([128], np.int64), "s1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64]),
                               helper.make_tensor_value_info("g", TensorProto.INT64, [2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_in_memory_initializers_give_onnxruntimes_own_session() -> None:
    model = _model()
    before = model.SerializeToString()
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    reference = ort.InferenceSession(before, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    sessions = [runtime.make_session(model, optimize=k % 2 == 1) for k in range(6)]
    gc.collect()  # the arrays handed to onnxruntime are gone now: its copies must not point into them
    for session in sessions:
        out = runtime.run(session, {"x": x})
        assert all(np.array_equal(a, b) for a, b in zip(out, reference, strict=True))
    assert model.SerializeToString() == before  # the caller's model is untouched


def test_light_bytes_stub_only_big_numpy_dtype_initializers() -> None:
    model = _model()
    opts = runtime.session_options()
    payload, arrays = runtime._light_bytes(model, opts)
    light = onnx.load_from_string(payload)
    external = {t.name for t in light.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    assert external == {"W", "B", "table"}  # the bfloat16 C and the small shapes stay in the bytes
    assert len(arrays) == 3 and len(payload) < 4096
