"""check: onnx's full checker sees big weights as declared inputs, with the same verdicts as on the whole model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq import check
from onnxq.errors import ValidationError


def _matmul(inner: int) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((inner, 64), np.float32), "W")  # 16 KB or more: a declared input
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 64])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _full_checker_fails(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return True
    return False


@pytest.mark.parametrize("inner", [64, 32])
def test_same_verdict_as_the_full_checker(inner: int) -> None:
    model = _matmul(inner)  # inner 32: MatMul [2,64] x [32,64] contradicts, through the weight's dims
    assert check.CHECKER_INPUT_MIN_BYTES <= inner * 64 * 4
    assert "W" not in {t.name for t in onnx.load_from_string(check._checker_bytes(model)).graph.initializer}
    problem = check.validation_problem(model, None)
    assert (problem is not None) == _full_checker_fails(model) == (inner != 64)
    if problem is not None:
        assert problem.startswith("onnx's checker fails")


def test_weight_data_shorter_than_its_dims_is_named_by_the_checker() -> None:
    model = _matmul(64)
    model.graph.initializer[0].raw_data = np.ones((32, 64), np.float32).tobytes()  # half the data
    assert _full_checker_fails(model)
    assert "W" in {t.name for t in onnx.load_from_string(check._checker_bytes(model)).graph.initializer}
    for feed in ({"X": np.ones((2, 64), np.float32)}, None):
        with pytest.raises(ValidationError, match="raw_data size"):
            check.check_model(model, feed)


def test_checked_bytes_are_the_deterministic_serialization() -> None:
    model = _matmul(64)
    checked = check.check_model(model, {"X": np.ones((2, 64), np.float32)})
    assert checked.data == model.SerializeToString(deterministic=True)
    np.testing.assert_allclose(checked.outputs[0], np.full((2, 64), 64, np.float32))
