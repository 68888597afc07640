"""Tests for onnxq.preprocess: opset upgrade, constant folding/cleanup, shape inference, BN folding.

Oracles: onnxruntime's execution of the model before and after each pass (the passes must not change
what the model computes), the BN-folding formula recomputed in numpy, and onnx.checker.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import DATA, ort_run
from onnx import TensorProto, helper, numpy_helper

from onnxq.errors import ConfigError, UnsupportedModelError
from onnxq.preprocess import (
    PreprocessOptions,
    fold_batchnorms,
    fold_constants,
    preprocess,
    shapes,
    upgrade_opset,
)

FLOAT = TensorProto.FLOAT


# ----------------------------------------------------------------------------------------- helpers


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits=(), opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def _vi(name: str, shape, elem=FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort_run(model, feeds, optimize=True)


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def _bn_inits(c: int, rng: np.random.Generator, prefix: str = "bn") -> list[onnx.TensorProto]:
    return [
        _init(f"{prefix}_gamma", rng.uniform(0.5, 2.0, c).astype(np.float32)),
        _init(f"{prefix}_beta", rng.normal(0, 1, c).astype(np.float32)),
        _init(f"{prefix}_mean", rng.normal(0, 1, c).astype(np.float32)),
        _init(f"{prefix}_var", rng.uniform(0.1, 3.0, c).astype(np.float32)),
    ]


def _bn_node(x: str, y: str, prefix: str = "bn", **attrs) -> onnx.NodeProto:
    names = [f"{prefix}_{p}" for p in ("gamma", "beta", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [y], name=prefix, epsilon=1e-3, **attrs)


def _assert_same_outputs(before, after, feeds, rtol=1e-5, atol=1e-5):
    for a, b in zip(_run(before, feeds), _run(after, feeds)):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


def _conv_bn_model(cin, cout, group, bias, rng, op="Conv"):
    if op == "Conv":
        w = rng.normal(0, 0.5, (cout, cin // group, 3, 3)).astype(np.float32)
    else:
        w = rng.normal(0, 0.5, (cin, cout // group, 3, 3)).astype(np.float32)
    inits = [_init("W", w), *_bn_inits(cout, rng)]
    conv_inputs = ["x", "W"]
    if bias:
        inits.append(_init("B", rng.normal(0, 1, cout).astype(np.float32)))
        conv_inputs.append("B")
    nodes = [
        helper.make_node(op, conv_inputs, ["c"], name="conv", group=group, pads=[1, 1, 1, 1]),
        _bn_node("c", "y"),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    return _model(nodes, [_vi("x", [2, cin, 6, 6])], [_vi("z", [2, cout, 6, 6])], inits)


# --------------------------------------------------------------------------------------- BN folding


@pytest.mark.parametrize(
    ("cin", "cout", "group", "bias"),
    [(3, 8, 1, True), (3, 8, 1, False), (4, 6, 2, True), (4, 6, 2, False), (6, 6, 6, True), (6, 6, 6, False)],
    ids=["bias", "no-bias", "groups2-bias", "groups2", "depthwise-bias", "depthwise"],
)
def test_bn_folds_into_conv(cin, cout, group, bias):
    rng = _rng(1)
    model = _conv_bn_model(cin, cout, group, bias, rng)
    folded = fold_batchnorms(model)
    assert _ops(folded)["BatchNormalization"] == 0
    assert len(folded.graph.node[0].input) == 3  # bias created when absent
    onnx.checker.check_model(folded, full_check=True)
    _assert_same_outputs(model, folded, {"x": rng.normal(0, 1, (2, cin, 6, 6)).astype(np.float32)})


def test_conv_fold_matches_formula():
    """Independent oracle: W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps)."""
    rng = _rng(2)
    model = _conv_bn_model(3, 4, 1, True, rng)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    s = inits["bn_gamma"] / np.sqrt(inits["bn_var"] + 1e-3)
    folded = {t.name: numpy_helper.to_array(t) for t in fold_batchnorms(model).graph.initializer}
    np.testing.assert_allclose(folded["W"], inits["W"] * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(folded["B"], (inits["B"] - inits["bn_mean"]) * s + inits["bn_beta"], rtol=1e-6)
    assert not any(name.startswith("bn_") for name in folded)


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_bn_folds_into_conv_transpose(group, bias):
    rng = _rng(3)
    model = _conv_bn_model(4, 6, group, bias, rng, op="ConvTranspose")
    folded = fold_batchnorms(model)
    assert _ops(folded) == Counter({"ConvTranspose": 1, "Relu": 1})
    _assert_same_outputs(model, folded, {"x": rng.normal(0, 1, (2, 4, 6, 6)).astype(np.float32)})


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(
    "c_shape", [None, (5,), (1, 5), (3, 5), ()], ids=["noC", "C-vec", "C-row", "C-mat", "C-scalar"]
)
def test_bn_folds_into_gemm(trans_b, c_shape):
    rng = _rng(4)
    k, n = 7, 5
    b = rng.normal(0, 1, (n, k) if trans_b else (k, n)).astype(np.float32)
    inits = [_init("B", b), *_bn_inits(n, rng)]
    gemm_inputs = ["a", "B"]
    if c_shape is not None:
        inits.append(_init("C", rng.normal(0, 1, c_shape).astype(np.float32)))
        gemm_inputs.append("C")
    nodes = [
        helper.make_node("Gemm", gemm_inputs, ["g"], transB=trans_b, alpha=0.7, beta=1.3),
        _bn_node("g", "y"),
    ]
    model = _model(nodes, [_vi("a", [3, k])], [_vi("y", [3, n])], inits)
    folded = fold_batchnorms(model)
    assert _ops(folded) == Counter({"Gemm": 1})
    onnx.checker.check_model(folded, full_check=True)
    _assert_same_outputs(model, folded, {"a": rng.normal(0, 1, (3, k)).astype(np.float32)})


def test_bn_not_folded_when_conv_output_has_second_consumer():
    rng = _rng(5)
    model = _conv_bn_model(3, 4, 1, True, rng)
    model.graph.node.append(helper.make_node("Relu", ["c"], ["c2"]))
    model.graph.output.append(_vi("c2", [2, 4, 6, 6]))
    folded, notes = preprocess(model)
    assert _ops(folded)["BatchNormalization"] == 1
    assert any("1 BatchNormalization left unfolded" in note for note in notes)
    _assert_same_outputs(model, folded, {"x": rng.normal(0, 1, (2, 3, 6, 6)).astype(np.float32)})


def test_bn_not_folded_when_conv_output_is_graph_output():
    model = _conv_bn_model(3, 4, 1, True, _rng(6))
    model.graph.output.append(_vi("c", [2, 4, 6, 6]))
    assert _ops(fold_batchnorms(model))["BatchNormalization"] == 1


def test_bn_not_folded_in_training_mode_or_with_variable_stats():
    rng = _rng(7)
    training = _conv_bn_model(3, 4, 1, True, rng)
    training.opset_import[0].version = 14
    training.graph.node[1].attribute.append(helper.make_attribute("training_mode", 1))
    assert _ops(fold_batchnorms(training))["BatchNormalization"] == 1

    variable = _conv_bn_model(3, 4, 1, True, rng)
    gamma = next(t for t in variable.graph.initializer if t.name == "bn_gamma")
    variable.graph.initializer.remove(gamma)
    variable.graph.input.append(_vi("bn_gamma", [4]))
    assert _ops(fold_batchnorms(variable))["BatchNormalization"] == 1


def test_standalone_bn_left_alone():
    rng = _rng(8)
    shape = [1, 4, 3, 3]
    model = _model([_bn_node("x", "y")], [_vi("x", shape)], [_vi("y", shape)], _bn_inits(4, rng))
    out, notes = preprocess(model)
    assert _ops(out) == Counter({"BatchNormalization": 1})
    assert notes == ["1 BatchNormalization left unfolded (no foldable producer, shared output, "
                     "non-constant or training-mode BN; the debug log says which)"]


def test_shared_weight_is_copied_not_modified():
    """Two Convs read W; folding the BN after one of them must not change the other."""
    rng = _rng(9)
    inits = [_init("W", rng.normal(0, 1, (4, 3, 1, 1)).astype(np.float32)), *_bn_inits(4, rng)]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c1"]),
        helper.make_node("Conv", ["x", "W"], ["c2"]),
        _bn_node("c1", "y1"),
    ]
    model = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y1", [1, 4, 4, 4]), _vi("c2", [1, 4, 4, 4])], inits)
    out, notes = preprocess(model)
    assert notes == ["folded 1 BatchNormalization into Conv"]
    assert {t.name for t in out.graph.initializer} >= {"W", "W_bn_folded"}
    _assert_same_outputs(model, out, {"x": rng.normal(0, 1, (1, 3, 4, 4)).astype(np.float32)})


# ---------------------------------------------------------------------------------- opset upgrade


def _opset11_model(rng) -> onnx.ModelProto:
    """Conv + Pad (pads as input) + Resize (roi, scales) + Squeeze/Unsqueeze (axes attributes) + BN."""
    inits = [
        _init("W", rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32)),  # > 4 KiB: detached path
        _init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        _init("roi", np.array([], np.float32)),
        _init("scales", np.array([1, 1, 2, 2], np.float32)),
        *_bn_inits(16, rng),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "W"], ["c"]),
        _bn_node("c", "b"),
        helper.make_node("Resize", ["b", "roi", "scales"], ["r"], mode="nearest"),
        helper.make_node("Unsqueeze", ["r"], ["u"], axes=[0]),
        helper.make_node("Squeeze", ["u"], ["y"], axes=[0]),
        helper.make_node("Split", ["y"], ["s1", "s2"], axis=1, split=[6, 10]),
    ]
    outputs = [_vi("s1", [1, 6, 8, 8]), _vi("s2", [1, 10, 8, 8])]
    model = _model(nodes, [_vi("x", [1, 8, 4, 4])], outputs, inits, opset=11)
    model.ir_version = 6
    model.metadata_props.add(key="origin", value="test")
    return model


def test_opset11_upgraded_to_13_and_checked():
    rng = _rng(10)
    model = _opset11_model(rng)
    out, notes = preprocess(model)
    assert [(o.domain, o.version) for o in out.opset_import] == [("", 13)]
    assert out.ir_version == 7
    assert notes[0] == "opset 11 -> 13 (per-channel Q/DQ needs axis)"
    assert "folded 1 BatchNormalization into Conv" in notes
    assert [(p.key, p.value) for p in out.metadata_props] == [("origin", "test")]
    assert [i.name for i in out.graph.input] == ["x"]
    assert [o.name for o in out.graph.output] == ["s1", "s2"]
    onnx.checker.check_model(out, full_check=True)
    _assert_same_outputs(model, out, {"x": rng.normal(0, 1, (1, 8, 4, 4)).astype(np.float32)})


def test_opset9_upsample_becomes_resize():
    rng = _rng(11)
    inits = [_init("scales", np.array([1, 1, 2, 2], np.float32))]
    nodes = [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")]
    model = _model(nodes, [_vi("x", [1, 2, 3, 3])], [_vi("y", [1, 2, 6, 6])], inits, opset=9)
    out = upgrade_opset(model, 13)
    assert _ops(out)["Resize"] == 1 and "Upsample" not in _ops(out)
    onnx.checker.check_model(out, full_check=True)
    _assert_same_outputs(model, out, {"x": rng.normal(0, 1, (1, 2, 3, 3)).astype(np.float32)}, 0, 0)


def test_upgrade_failure_names_op_and_fix():
    """onnx's converter cannot upgrade a per-activation (spatial=0) BatchNormalization past opset 8."""
    rng = _rng(12)
    nodes = [_bn_node("x", "y", spatial=0)]
    model = _model(nodes, [_vi("x", [1, 4, 3, 3])], [_vi("y", [1, 4, 3, 3])], _bn_inits(4, rng), opset=7)
    message = r"opset 7 to 13 at op BatchNormalization .*re-export the model at opset >= 13"
    with pytest.raises(UnsupportedModelError, match=message):
        preprocess(model)


def test_upgrade_that_keeps_a_removed_op_is_rejected():
    """The converter silently keeps Scatter (removed after opset 10); the schema check must name it."""
    inits = [_init("idx", np.zeros((1, 3), np.int64))]
    nodes = [helper.make_node("Scatter", ["x", "idx", "upd"], ["y"])]
    model = _model(nodes, [_vi("x", [2, 3]), _vi("upd", [1, 3])], [_vi("y", [2, 3])], inits, opset=11)
    with pytest.raises(UnsupportedModelError, match=r"op Scatter has no opset-13 form.*opset >= 13"):
        upgrade_opset(model, 13)


def test_opset13_model_untouched_by_upgrade():
    model = _conv_bn_model(3, 4, 1, True, _rng(12))
    model.opset_import[0].version = 17
    assert upgrade_opset(model, 13) is model
    out, notes = preprocess(model)
    assert out.opset_import[0].version == 17 and not any(n.startswith("opset") for n in notes)


def test_upgrade_keeps_external_data_references():
    rng = _rng(13)
    model = _opset11_model(rng)
    weight = next(t for t in model.graph.initializer if t.name == "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="weights.bin")
    weight.external_data.add(key="offset", value="0")
    out = upgrade_opset(model, 13)
    kept = next(t for t in out.graph.initializer if t.name == "W")
    assert kept.data_location == TensorProto.EXTERNAL
    assert [(e.key, e.value) for e in kept.external_data] == [("location", "weights.bin"), ("offset", "0")]


# ----------------------------------------------------------------------------- folding and cleanup


def _shape_chain_model(batch) -> onnx.ModelProto:
    """x -> Shape -> Gather(0), Gather(1) -> Unsqueeze -> Concat(.., -1) -> Reshape(x)."""
    inits = [
        _init("i0", np.array(0, np.int64)),
        _init("i1", np.array(1, np.int64)),
        _init("ax", np.array([0], np.int64)),
        _init("minus1", np.array([-1], np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i0"], ["d0"], axis=0),
        helper.make_node("Gather", ["shape", "i1"], ["d1"], axis=0),
        helper.make_node("Unsqueeze", ["d0", "ax"], ["u0"]),
        helper.make_node("Unsqueeze", ["d1", "ax"], ["u1"]),
        helper.make_node("Concat", ["u0", "u1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    return _model(nodes, [_vi("x", [batch, 3, 4, 5])], [_vi("y", [batch, 3, 20])], inits)


def test_static_shape_chain_is_folded():
    model = _shape_chain_model(2)
    out, notes = preprocess(model)
    assert _ops(out) == Counter({"Reshape": 1})
    target = next(t for t in out.graph.initializer if t.name == out.graph.node[0].input[1])
    np.testing.assert_array_equal(numpy_helper.to_array(target), [2, 3, -1])
    assert notes == ["folded constants and removed dead nodes: 6 nodes fewer "
                     "(Gather 2, Unsqueeze 2, Shape 1, Concat 1)"]
    y = next(v for v in out.graph.output if v.name == "y")
    assert [d.dim_value for d in y.type.tensor_type.shape.dim] == [2, 3, 20]  # shapes inferred
    _assert_same_outputs(model, out, {"x": _rng(14).normal(0, 1, (2, 3, 4, 5)).astype(np.float32)}, 0, 0)


def test_dynamic_batch_is_not_folded():
    model = _shape_chain_model("N")
    out, _ = preprocess(model)
    assert _ops(out)["Shape"] == 1  # the batch dimension must stay computed
    for batch in (1, 3):
        x = _rng(15).normal(0, 1, (batch, 3, 4, 5)).astype(np.float32)
        assert _run(out, {"x": x})[0].shape == (batch, 3, 20)


def test_constants_identities_and_dead_nodes():
    rng = _rng(16)
    w = rng.normal(0, 1, (4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], value=_init("Wc", w)),
        helper.make_node("Identity", ["W"], ["W_id"]),
        helper.make_node("Identity", ["x"], ["x_id"]),
        helper.make_node("Conv", ["x_id", "W_id"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Identity", ["r"], ["y"]),  # produces the graph output: name must stay
        helper.make_node("Sigmoid", ["x"], ["dead"]),
    ]
    model = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y", [1, 4, 4, 4])])
    out, _ = preprocess(model)
    assert _ops(out) == Counter({"Conv": 1, "Relu": 1})
    assert out.graph.node[-1].output[0] == "y"
    assert [i.name for i in out.graph.input] == ["x"] and [o.name for o in out.graph.output] == ["y"]
    assert len(out.graph.initializer) == 1
    _assert_same_outputs(model, out, {"x": rng.normal(0, 1, (1, 3, 4, 4)).astype(np.float32)}, 0, 0)


def test_random_ops_and_dropout_are_not_folded():
    c = _init("c", np.ones((2, 3), np.float32))
    nodes = [
        helper.make_node("RandomUniformLike", ["c"], ["r"], seed=1.0),
        helper.make_node("Dropout", ["c"], ["d"]),
        helper.make_node("Add", ["x", "r"], ["s"]),
        helper.make_node("Add", ["s", "d"], ["y"]),
    ]
    model = _model(nodes, [_vi("x", [2, 3])], [_vi("y", [2, 3])], [c])
    out = fold_constants(model)
    assert _ops(out)["RandomUniformLike"] == 1 and _ops(out)["Dropout"] == 1


def test_initializer_listed_as_input_is_kept():
    """Old exporters list weights as graph inputs; the interface must not change."""
    rng = _rng(17)
    model = _conv_bn_model(3, 4, 1, True, rng)
    model.graph.input.append(_vi("W", [4, 3, 3, 3]))
    out, _ = preprocess(model)
    assert [i.name for i in out.graph.input] == ["x", "W"]
    _assert_same_outputs(model, out, {"x": rng.normal(0, 1, (2, 3, 6, 6)).astype(np.float32)})


# ------------------------------------------------------------------------------ pipeline and options


def test_input_model_is_not_modified():
    model = _opset11_model(_rng(18))
    model.graph.node.insert(0, helper.make_node("Constant", [], ["unused_k"], value_float=1.0))
    before = model.SerializeToString()
    out, notes = preprocess(model)
    assert model.SerializeToString() == before
    assert out is not model and len(notes) >= 2


def test_options_disable_passes_and_validate():
    model = _opset11_model(_rng(19))
    off = PreprocessOptions(
        upgrade_opset=False, fold_constants=False, infer_shapes=False, fold_batchnorm=False, fold_pads=False
    )
    out, notes = preprocess(model, off)
    assert notes == [] and out.SerializeToString() == model.SerializeToString()
    with pytest.raises(ConfigError, match="min_opset"):
        PreprocessOptions(min_opset="13")
    with pytest.raises(ConfigError, match="from 10"):
        PreprocessOptions(min_opset=7)


def test_shapes_inferred_on_a_light_copy_equal_onnx_on_the_full_model():
    """infer_shapes stubs initializers over 1 MB; onnx's own inference of the full model is the reference.

    The model has a 2 MB weight feeding a MatMul, a Reshape whose target is computed from Shape (data
    propagation), and a small constant shape that must stay readable."""
    rng = _rng(21)
    inits = [
        _init("W", rng.standard_normal((20, 26000)).astype(np.float32)),  # 2.08 MB: stubbed
        _init("i1", np.array(1, np.int64)), _init("ax", np.array([0], np.int64)),
        _init("minus1", np.array([-1], np.int64)), _init("flat", np.array([-1, 13000], np.int64)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i1"], ["d1"], axis=0),
        helper.make_node("Unsqueeze", ["d1", "ax"], ["u1"]),
        helper.make_node("Concat", ["minus1", "u1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["m", "target"], ["r"]),
        helper.make_node("Reshape", ["r", "flat"], ["y"]),
    ]
    model = _model(nodes, [_vi("x", ["batch", 7, 20])], [_vi("y", None)], inits)
    reference = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    out = shapes.infer_shapes(model)
    assert out.graph.value_info == reference.graph.value_info and out.graph.output == reference.graph.output
    assert {vi.name for vi in out.graph.value_info} >= {"m", "r", "target"}
    assert [t.SerializeToString() for t in out.graph.initializer] == [t.SerializeToString() for t in model.graph.initializer]


def test_min_opset_above_13_and_large_model_shapes(monkeypatch):
    monkeypatch.setattr(shapes, "fits_in_memory_api", lambda model: False)  # as if the model were over 2 GB
    out, notes = preprocess(_opset11_model(_rng(20)), PreprocessOptions(min_opset=17))
    assert out.opset_import[0].version == 17 and "opset 11 -> 17" in notes
    typed = {vi.name for vi in out.graph.value_info if vi.type.tensor_type.elem_type}
    assert typed and typed <= {o for n in out.graph.node for o in n.output}  # inferred on a light copy


# ------------------------------------------------------------------------------------- real model


def _yolox_path() -> Path:
    return DATA.parent / "models" / "yolox_nano.onnx"


@pytest.mark.skipif(not _yolox_path().is_file(), reason="YOLOX-Nano model not found (set ONNXQ_DATA)")
def test_yolox_nano_real_model():
    model = onnx.load(str(_yolox_path()))
    out, notes = preprocess(model)
    assert out.opset_import[0].version >= 13 and notes[0].startswith("opset 11 -> 13")
    onnx.checker.check_model(out, full_check=True)
    x = _rng(21).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    (ref,), (got,) = _run(model, {"images": x}), _run(out, {"images": x})
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))


def test_zero_pad_folds_into_conv_padding_with_identical_outputs() -> None:
    import numpy as np
    import onnxruntime as ort

    from onnxq.preprocess.pad_fold import fold_pads
    from onnxq.testing import model_from_text

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,7,7] x) => (float[1,4,8,8] y, float[1,3,9,9] z) {
      p = Pad (x, pads)
      y = Conv <pads=[1,0,0,1]> (p, W)
      q = Pad <mode="reflect"> (x, pads2)
      z = Identity (q)
    }
    """
    m = model_from_text(text, weights={"W": (4, 3, 3, 3), "pads": np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64),
                                       "pads2": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    folded, n = fold_pads(m)
    assert n == 1
    assert [x.op_type for x in folded.graph.node].count("Pad") == 1  # the reflect Pad stays
    x = np.random.default_rng(0).standard_normal((1, 3, 7, 7)).astype(np.float32)
    a = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})
    b = ort.InferenceSession(folded.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a[1], b[1])
