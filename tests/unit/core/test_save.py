"""QuantResult.save: the check quantize ran is not repeated for the same bytes, and is for changed ones."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq import check
from onnxq.api import quantize
from onnxq.errors import ValidationError


def _model():
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    node = helper.make_node("Conv", ["X", "W"], ["Y"], name="conv", pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_save_skips_the_repeat_check_only_for_unchanged_bytes(tmp_path, monkeypatch) -> None:
    feeds = [{"X": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)} for i in range(3)]
    result = quantize(_model(), feeds)
    calls = []
    real = check.check_model
    monkeypatch.setattr(check, "check_model", lambda m, f: (calls.append(1), real(m, f))[1])
    result.save(tmp_path / "a.onnx")
    assert calls == []  # quantize checked exactly these bytes
    result.model.graph.node[-1].name = "renamed"  # any change: the check runs again
    result.save(tmp_path / "b.onnx")
    assert calls == [1]
    del result.model.graph.initializer[:]  # and an invalid change is refused, no file written
    with pytest.raises(ValidationError):
        result.save(tmp_path / "c.onnx")
    assert not (tmp_path / "c.onnx").exists()
    assert (tmp_path / "a.onnx").read_bytes() != (tmp_path / "b.onnx").read_bytes()
