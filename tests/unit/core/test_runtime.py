"""onnxq.runtime: sessions built with the big initializers handed over in memory match onnxruntime's own."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import save_random_arrays
from onnx import TensorProto, helper, numpy_helper

from onnxq import runtime
from onnxq.cli import main
from onnxq.testing import model_from_text


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


def _reads_model(ir_version: int = 8, weights_as_inputs: bool = False) -> onnx.ModelProto:
    """Big (16 KB) initializers: W read by a node, V read only inside an If branch, O a graph output
    itself, U read by nothing; optionally all listed as graph inputs too (IR < 4 requires it)."""
    big = {name: np.full((64, 64), k + 1.0, np.float32) for k, name in enumerate("WVOU")}
    then_branch = helper.make_graph([helper.make_node("MatMul", ["m", "V"], ["t"])], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 64])])
    else_branch = helper.make_graph([helper.make_node("Relu", ["m"], ["e"])], "else", [],
                                    [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 64])])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"]),
             helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, [])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, [64, 64]) for name in big]
    graph = helper.make_graph(nodes, "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64]),
                               helper.make_tensor_value_info("O", TensorProto.FLOAT, [64, 64])],
                              [numpy_helper.from_array(v, k) for k, v in big.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    return model


def test_unread_initializers_are_not_handed_to_onnxruntime() -> None:
    """onnxruntime drops an initializer nothing reads, then fails on a handed-over one it no longer has
    ("Failed to find existing initializer"): every real model after --equalize hit that."""
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    for ir_version, weights_as_inputs in ((8, False), (8, True), (3, True)):
        model = _reads_model(ir_version, weights_as_inputs)
        reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        for flag in (True, False):
            feed = {"x": x, "flag": np.array(flag)}
            got = runtime.run(runtime.make_session(model), feed)
            assert all(np.array_equal(a, b) for a, b in zip(got, reference.run(None, feed), strict=True))
        payload, arrays = runtime._light_bytes(model, runtime.session_options())
        light = onnx.load_from_string(payload)
        external = {t.name for t in light.graph.initializer if t.data_location == TensorProto.EXTERNAL}
        assert external == {"W", "V", "O"} and len(arrays) == 3  # U stays in the bytes for onnxruntime to drop


def test_load_problem_names_onnxruntimes_refusal() -> None:
    assert runtime.load_problem(_model()) is None
    assert "Could not find an implementation" in runtime.load_problem(_double_conv())


def _double_conv() -> onnx.ModelProto:
    """A valid model onnxruntime's CPU provider cannot load: it has no float64 Conv kernel."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (double[1,3,8,8] x) => (double[1,4,8,8] y) { y = Conv <pads=[1,1,1,1]> (x, W) }"""
    return model_from_text(text, weights={"W": np.ones((4, 3, 3, 3), np.float64)})


# Whose fault a refused session is: onnxq's when the graph is one it built from a model that loads as given
# (exit 1, "internal error ... report it"), the user's when the model as given is refused too (exit 2).

CONVS = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,4,8,8] y) { c = Conv <pads=[1,1,1,1]> (x, W, B)
 r = Relu (c)
 y = Conv <pads=[1,1,1,1]> (r, W2) }"""


def _cli(tmp_path, model: onnx.ModelProto) -> tuple[list[str], Path]:
    """``model`` saved in ``tmp_path`` and the flags of a calibration folder of 4 random samples for it."""
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    dtype = helper.tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type)
    calib = save_random_arrays(tmp_path / "calib", 4, shape, dtype=dtype)
    return ["--calib-data", str(calib)], path


def _break_the_equalized_graph(monkeypatch) -> None:
    """An onnxq bug stand-in: the graph after equalization holds a weight of the wrong dtype (float64 for
    a float Conv), which onnxruntime refuses and nothing checks before the calibration session."""
    from onnxq import api

    def broken(pre, *args, **kwargs):
        out = onnx.ModelProto()
        out.CopyFrom(pre)
        weight = next(t for t in out.graph.initializer if t.name == "W")
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float64), "W"))
        return out

    monkeypatch.setattr(api, "equalized", broken)


@pytest.mark.parametrize("command", ["quantize", "calibrate", "sensitivity"])
def test_a_refused_onnxq_graph_is_an_internal_error(tmp_path, monkeypatch, capsys, command) -> None:
    model = model_from_text(CONVS, weights={"W": (4, 3, 3, 3), "B": (4,), "W2": (4, 4, 3, 3)})
    flags, path = _cli(tmp_path, model)
    out = {"quantize": ["-o", str(tmp_path / "q.onnx")], "calibrate": ["-o", str(tmp_path / "s.npz")],
           "sensitivity": []}[command]
    _break_the_equalized_graph(monkeypatch)
    assert main([command, str(path), *out, *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "internal error" in err and "report it" in err, err
    assert "onnxruntime cannot load the graph onnxq built" in err


def test_a_model_onnxruntime_refuses_as_given_stays_the_users_error(tmp_path, capsys) -> None:
    flags, path = _cli(tmp_path, _double_conv())
    assert main(["quantize", str(path), "-o", str(tmp_path / "q.onnx"), *flags]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime cannot load the model" in err and "internal error" not in err
