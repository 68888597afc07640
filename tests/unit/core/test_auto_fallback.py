"""quantize's default (--method auto): a poor held-out result leaves the layers that lose it in float, within
a cap, and says so; max_float_layers=0 keeps every layer quantized and only warns."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxq import api, runtime
from onnxq.analysis.auto import poor_outputs

RNG = np.random.default_rng(0)


def _model() -> onnx.ModelProto:
    """h = X @ W1 (4 channels ~100, 4 channels ~0.01); Y = h @ W2 reads only the small channels, Z = h @ W3
    only the big ones. Per-tensor int8 on h (both MatMuls' input) rounds the small channels to nothing, so Y
    comes out at ~0 dB SQNR; left in float, mm2 reads h unquantized."""
    w1 = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    w1[:, :4] *= 100.0
    w1[:, 4:] *= 0.01
    pick = np.eye(8, dtype=np.float32)
    w2, w3 = pick[:, 4:].copy(), pick[:, :4].copy()
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "W2"], ["Y"], name="mm2"),
             helper.make_node("MatMul", ["h", "W3"], ["Z"], name="mm3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4]),
                               helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["n", 4])],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2"),
                               numpy_helper.from_array(w3, "W3")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


FEEDS = [{"X": RNG.standard_normal((4, 8)).astype(np.float32)} for _ in range(48)]  # 9 held out


def _y_sqnr(model: onnx.ModelProto, quantized: onnx.ModelProto) -> float:
    """Y's SQNR (dB) of ``quantized`` against ``model`` on every feed, from an independent run."""
    ref = np.concatenate([runtime.run(runtime.make_session(model), f)[0] for f in FEEDS])
    out = np.concatenate([runtime.run(runtime.make_session(quantized), f)[0] for f in FEEDS])
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))


def test_poor_result_leaves_the_guilty_layer_in_float(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="onnxq.api"):
        result = api.quantize(_model(), FEEDS)
    assert poor_outputs(result.report.choice)  # the search alone cannot save the small channels
    fallback = result.report.fallback
    assert fallback is not None and fallback.float_nodes == ("mm2",) and fallback.verified_met
    assert "mm2" not in result.report.quantized_nodes and {"mm1", "mm3"} <= set(result.report.quantized_nodes)
    assert _y_sqnr(_model(), result.model) > 30.0
    assert any("kept 1 layers in float (mm2)" in r.getMessage() for r in caplog.records)


def test_zero_cap_keeps_every_layer_quantized_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="onnxq.api"):
        result = api.quantize(_model(), FEEDS, max_float_layers=0)
    assert result.report.fallback is None
    assert {"mm1", "mm2", "mm3"} <= set(result.report.quantized_nodes)
    assert _y_sqnr(_model(), result.model) < 10.0
    assert any("far from float" in r.getMessage() for r in caplog.records)


def test_too_few_held_out_feeds_only_warn(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="onnxq.api"):
        result = api.quantize(_model(), FEEDS[:16])  # 3 held out: a slice SQNR on them says little
    assert poor_outputs(result.report.choice) and result.report.fallback is None
    assert any("too few held-out feeds" in r.getMessage() for r in caplog.records)


def _tail_model() -> onnx.ModelProto:
    """Y = X @ W, 22 output columns: 18 read X's 4 big features (~100), 4 read its 4 small ones (~1): one
    per-tensor int8 scale on X leaves those 4 columns at a few dB, none under 0 dB, the whole output at ~40."""
    w = np.zeros((8, 22), np.float32)
    rng = np.random.default_rng(2)
    w[:4, :18] = rng.standard_normal((4, 18))
    w[4:, 18:] = rng.standard_normal((4, 4))
    node = helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 22])],
                              [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


TAIL_FEEDS = [{"X": (RNG.uniform(-1, 1, (4, 8)) * np.array([100] * 4 + [1] * 4)).astype(np.float32)}
              for _ in range(48)]


def test_a_twentieth_of_the_slices_under_10_db_is_poor_and_falls_back(caplog) -> None:
    """The tail rule alone flags it (worst slice above 0 dB, whole output above 10 dB): the MatMul goes float."""
    with caplog.at_level(logging.WARNING, logger="onnxq.api"):
        kept = api.quantize(_tail_model(), TAIL_FEEDS, max_float_layers=0)
    (figure,) = kept.report.choice.outputs
    assert figure.sqnr_db > 10.0 and figure.worst_sqnr_db > 0.0 and figure.tail_sqnr_db < 10.0
    assert "a twentieth of its slices under 10 dB" in " ".join(poor_outputs(kept.report.choice))
    result = api.quantize(_tail_model(), TAIL_FEEDS)
    assert result.report.fallback is not None and result.report.fallback.float_nodes == ("mm",)
    ref = np.concatenate([runtime.run(runtime.make_session(_tail_model()), f)[0] for f in TAIL_FEEDS])
    out = np.concatenate([runtime.run(runtime.make_session(result.model), f)[0] for f in TAIL_FEEDS])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)  # nothing quantized is left on Y's path


def _if_model() -> onnx.ModelProto:
    """:func:`_model`'s three MatMuls inside the then-branch of an If the data always takes (|X| max > 0)."""
    flat = _model()
    then = helper.make_graph(list(flat.graph.node), "then", [], list(flat.graph.output))
    alt = helper.make_graph([helper.make_node("Slice", ["X", "s0", "s4", "s1"], ["Ye"], name="else_y"),
                             helper.make_node("Slice", ["X", "s4", "s8", "s1"], ["Ze"], name="else_z")],
                            "else", [], [helper.make_tensor_value_info("Ye", TensorProto.FLOAT, ["n", 4]),
                                         helper.make_tensor_value_info("Ze", TensorProto.FLOAT, ["n", 4])])
    consts = [numpy_helper.from_array(np.array([v], np.int64), f"s{v}") for v in (0, 1, 4, 8)]
    nodes = [helper.make_node("Abs", ["X"], ["a"], name="abs"),
             helper.make_node("ReduceMax", ["a"], ["m"], name="max", keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["c"], name="gt"),
             helper.make_node("If", ["c"], ["Y", "Z"], name="branch", then_branch=then, else_branch=alt)]
    graph = helper.make_graph(nodes, "g", list(flat.graph.input), list(flat.graph.output),
                              [*flat.graph.initializer, *consts, numpy_helper.from_array(np.array(0, np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_the_fallback_acts_on_layers_inside_a_body() -> None:
    """The default command on a poor model whose layers live in an If branch: the guilty MatMul, inside
    the branch, is left in float (the gated model gates body units; this was an internal error)."""
    result = api.quantize(_if_model(), FEEDS)
    fallback = result.report.fallback
    assert fallback is not None and fallback.float_nodes == ("mm2",) and fallback.verified_met
    assert {"mm1", "mm3"} <= set(result.report.quantized_nodes)
    assert _y_sqnr(_if_model(), result.model) > 30.0
