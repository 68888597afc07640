"""Golden cases for control flow: the rules apply inside If/Loop/Scan bodies (nested too), body tensors'
statistics cover every execution of their body, Q/DQ lands in the body, and outer-scope references stay
valid.

The statistics are checked against numpy references that unroll the control flow by hand; the quantized
models are run by onnxruntime (``onnxq.quantize`` validates each one) and compared with the float model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import onnxq
from onnxq.collect.collectors import collect
from onnxq.collect.python_sources import from_iterable
from onnxq.config import ActivationSpec, Method, QuantConfig, Target
from onnxq.placement import plan
from onnxq.preprocess import preprocess
from onnxq.preprocess.names import name_nodes
from onnxq.records import Role

RNG = np.random.default_rng(0)
MINMAX = ActivationSpec(method=Method.MINMAX)


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _w(name, shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def if_model() -> onnx.ModelProto:
    """If(mean(x) > 0): then Conv(x, W1 outer) -> Relu -> Conv(., W2 of the branch); else Relu(x) * 2."""
    then = helper.make_graph(
        [helper.make_node("Conv", ["x", "W1"], ["a"], name="then_conv1", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["b"], name="then_relu"),
         helper.make_node("Conv", ["b", "W2"], ["t"], name="then_conv2", pads=[1, 1, 1, 1])],
        "then", [], [_vi("t", TP.FLOAT, [1, 4, 8, 8])], [_w("W2", (4, 4, 3, 3))])
    other = helper.make_graph(
        [helper.make_node("Conv", ["x", "W1"], ["e0"], name="else_conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["e0"], ["e"], name="else_relu")],
        "else", [], [_vi("e", TP.FLOAT, [1, 4, 8, 8])])
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other)]
    inits = [_w("W1", (4, 3, 3, 3)), numpy_helper.from_array(np.array(0, np.float32), "zero")]
    return _model(nodes, [_vi("x", TP.FLOAT, [1, 3, 8, 8])], [_vi("y", TP.FLOAT, [1, 4, 8, 8])], inits)


def nested_loop_model(outer: int = 2, inner: int = 3) -> onnx.ModelProto:
    """Loop(outer) { Loop(inner) { v = tanh(v @ Wl) } ; v = v * 0.9 }: a MatMul two bodies deep reading
    an outer-scope initializer."""
    inner_body = helper.make_graph(
        [helper.make_node("Identity", ["c_in2"], ["c_out2"], name="inner_cond"),
         helper.make_node("MatMul", ["v_in2", "Wl"], ["mm"], name="inner_matmul"),
         helper.make_node("Tanh", ["mm"], ["v_out2"], name="inner_tanh")],
        "inner", [_vi("i2", TP.INT64, []), _vi("c_in2", TP.BOOL, []), _vi("v_in2", TP.FLOAT, [2, 8])],
        [_vi("c_out2", TP.BOOL, []), _vi("v_out2", TP.FLOAT, [2, 8])])
    outer_body = helper.make_graph(
        [helper.make_node("Identity", ["c_in1"], ["c_out1"], name="outer_cond"),
         helper.make_node("Loop", ["inner_trips", "", "v_in1"], ["v_mid"], name="inner_loop", body=inner_body),
         helper.make_node("Mul", ["v_mid", "decay"], ["v_out1"], name="outer_mul")],
        "outer", [_vi("i1", TP.INT64, []), _vi("c_in1", TP.BOOL, []), _vi("v_in1", TP.FLOAT, [2, 8])],
        [_vi("c_out1", TP.BOOL, []), _vi("v_out1", TP.FLOAT, [2, 8])])
    nodes = [helper.make_node("Loop", ["outer_trips", "", "x"], ["y"], name="outer_loop", body=outer_body)]
    inits = [_w("Wl", (8, 8)), numpy_helper.from_array(np.array(outer, np.int64), "outer_trips"),
             numpy_helper.from_array(np.array(inner, np.int64), "inner_trips"),
             numpy_helper.from_array(np.array(0.9, np.float32), "decay")]
    return _model(nodes, [_vi("x", TP.FLOAT, [2, 8])], [_vi("y", TP.FLOAT, [2, 8])], inits)


def scan_model() -> onnx.ModelProto:
    """Scan over 5 steps: s = s + x_t @ Ws; q = relu(s); y_t = q @ Wq."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "Ws"], ["p"], name="scan_matmul"),
         helper.make_node("Add", ["s_in", "p"], ["s_out"], name="scan_add"),
         helper.make_node("Relu", ["s_out"], ["q"], name="scan_relu"),
         helper.make_node("MatMul", ["q", "Wq"], ["y_t"], name="scan_head")],
        "scan_body", [_vi("s_in", TP.FLOAT, [1, 6]), _vi("x_t", TP.FLOAT, [1, 4])],
        [_vi("s_out", TP.FLOAT, [1, 6]), _vi("y_t", TP.FLOAT, [1, 3])])
    nodes = [helper.make_node("Scan", ["s0", "x"], ["s_last", "ys"], name="scan", body=body, num_scan_inputs=1)]
    inits = [numpy_helper.from_array(np.zeros((1, 6), np.float32), "s0"), _w("Ws", (4, 6)), _w("Wq", (6, 3))]
    return _model(nodes, [_vi("x", TP.FLOAT, [5, 1, 4])], [_vi("ys", TP.FLOAT, [5, 1, 3]),
                                                             _vi("s_last", TP.FLOAT, [1, 6])], inits)


def _init(model, name):
    found = [t for g in _graphs(model.graph) for t in g.initializer if t.name == name]
    return numpy_helper.to_array(found[0])


def _graphs(graph):
    out = [graph]
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out.extend(_graphs(a.g))
    return out


def _body_ops(model) -> list[str]:
    return [n.op_type for g in _graphs(model.graph)[1:] for n in g.node]


def _conv(x, w):  # 3x3, pad 1, stride 1 (NCHW)
    _, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=-1)
    return np.einsum("nchwk,ock->nohw", cols, w.reshape(w.shape[0], w.shape[1], 9))


def _prepared(model):
    pre, _ = preprocess(model)
    return name_nodes(pre)[0]


def _stats(model, feeds, config):
    pre = _prepared(model)
    qplan = plan(pre, config)
    stats, _ = collect(pre, qplan, from_iterable(feeds), config, optimize=False)
    return pre, qplan, stats


def _unique_names(model) -> bool:
    graphs = _graphs(model.graph)
    outputs = [o for g in graphs for n in g.node for o in n.output if o]
    nodes = [n.name for g in graphs for n in g.node]
    return len(outputs) == len(set(outputs)) and len(nodes) == len(set(nodes))


@pytest.mark.parametrize("target", [Target.TENSORRT, Target.ORT_CPU])
def test_if_body_is_planned_with_outer_weight_per_channel(target):
    qplan = plan(_prepared(if_model()), QuantConfig(target=target))
    weights = {s.tensor: s for s in qplan.weights()}
    assert weights["W1"].axis == 0 and {c[0] for c in weights["W1"].consumers} == {"then_conv1", "else_conv"}
    assert weights["W2"].axis == 0
    assert {"then_conv1", "then_conv2", "else_conv"} <= set(qplan.quantized_nodes)
    assert {s.node: s.rule for s in qplan.skips}["if"] == "control-flow"
    assert qplan.spec_for("b") is not None  # an activation computed in the branch


def test_if_statistics_cover_only_runs_of_the_computing_branch():
    feeds = [{"x": (RNG.standard_normal((1, 3, 8, 8)) + sign).astype(np.float32)} for sign in (1, -1, 1, 1, -1)]
    config = QuantConfig(activations=MINMAX)
    pre, _, stats = _stats(if_model(), feeds, config)
    w1 = _init(pre, "W1")
    taken = [f["x"] for f in feeds if f["x"].mean() > 0]
    b = np.concatenate([np.maximum(_conv(x, w1), 0) for x in taken])
    assert stats["b"].count == b.size
    np.testing.assert_allclose([stats["b"].min, stats["b"].max], [b.min(), b.max()], rtol=1e-5, atol=1e-6)
    x = np.concatenate([f["x"] for f in feeds])  # an outer tensor read in both branches: every feed
    assert stats["x"].count == x.size and np.isclose(stats["x"].max, x.max())


def test_nested_loop_statistics_cover_every_iteration():
    feeds = [{"x": RNG.standard_normal((2, 8)).astype(np.float32)} for _ in range(3)]
    pre, qplan, stats = _stats(nested_loop_model(), feeds, QuantConfig(activations=MINMAX))
    assert qplan.spec_for("v_in2") is not None and qplan.spec_for("Wl", Role.WEIGHT) is not None
    wl = _init(pre, "Wl")
    seen = []
    for f in feeds:
        v = f["x"]
        for _ in range(2):
            for _ in range(3):
                seen.append(v)
                v = np.tanh(v @ wl)
            v = v * np.float32(0.9)
    seen = np.stack(seen)
    assert stats["v_in2"].count == seen.size
    np.testing.assert_allclose([stats["v_in2"].min, stats["v_in2"].max], [seen.min(), seen.max()], rtol=1e-5)


def test_scan_statistics_cover_every_step():
    feeds = [{"x": RNG.standard_normal((5, 1, 4)).astype(np.float32)} for _ in range(2)]
    pre, _, stats = _stats(scan_model(), feeds, QuantConfig(activations=MINMAX))
    ws = _init(pre, "Ws")
    qs = []
    for f in feeds:
        s = np.zeros((1, 6), np.float32)
        for t in range(5):
            s = s + f["x"][t] @ ws
            qs.append(np.maximum(s, 0))
    qs = np.stack(qs)
    assert stats["q"].count == qs.size
    np.testing.assert_allclose([stats["q"].min, stats["q"].max], [qs.min(), qs.max()], rtol=1e-5, atol=1e-6)


CASES = {
    "if": (if_model, lambda: {"x": (RNG.standard_normal((1, 3, 8, 8)) + RNG.choice([-1, 1])).astype(np.float32)}),
    "nested-loop": (nested_loop_model, lambda: {"x": RNG.standard_normal((2, 8)).astype(np.float32)}),
    "scan": (scan_model, lambda: {"x": RNG.standard_normal((5, 1, 4)).astype(np.float32)}),
}


@pytest.mark.parametrize("target", [Target.TENSORRT, Target.ORT_CPU])
@pytest.mark.parametrize("case", sorted(CASES))
def test_quantized_bodies_run_and_stay_close_to_float(case, target):
    build, feed = CASES[case]
    model = build()
    feeds = [feed() for _ in range(16)]
    result = onnxq.quantize(model, feeds, QuantConfig(target=target, activations=MINMAX))
    ops = _body_ops(result.model)
    assert ops.count("DequantizeLinear") >= 2, ops  # weights and activations dequantized inside bodies
    assert _unique_names(result.model)
    import onnxruntime as ort
    f = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    for fd in feeds[:4]:
        a, b = f.run(None, fd)[0], q.run(None, fd)[0]
        sqnr = 10 * np.log10(np.sum(a ** 2) / max(np.sum((a - b) ** 2), 1e-20))
        assert sqnr > 20, (case, sqnr)


def test_outer_weight_is_dequantized_inside_the_body_that_reads_it():
    feeds = [{"x": RNG.standard_normal((2, 8)).astype(np.float32)} for _ in range(4)]
    result = onnxq.quantize(nested_loop_model(), feeds, QuantConfig(activations=MINMAX, target=Target.ORT_CPU))
    inner = _graphs(result.model.graph)[2]
    producer = {o: n for n in inner.node for o in n.output}
    matmul = next(n for n in inner.node if n.name == "inner_matmul")
    assert all(producer[i].op_type == "DequantizeLinear" for i in matmul.input)


def test_constant_condition_if_is_folded_away():
    model = if_model()
    graph = model.graph
    del graph.node[:2]  # the condition becomes a constant (a Keras learning-phase flag)
    graph.initializer.append(numpy_helper.from_array(np.array(False), "cond"))
    pre = _prepared(model)
    assert [n.op_type for n in pre.graph.node] == ["Conv", "Relu"]  # the else branch, inlined
    qplan = plan(pre)
    assert "else_conv" in qplan.quantized_nodes


def if_model_deep_else() -> onnx.ModelProto:
    """if_model whose else branch computes a tensor of its own that a Conv reads (a planned activation)."""
    model = if_model()
    node = next(n for n in model.graph.node if n.op_type == "If")
    other = next(a for a in node.attribute if a.name == "else_branch").g
    other.node[-1].output[0] = "e1"
    other.node.append(helper.make_node("Conv", ["e1", "W3"], ["e"], name="else_conv2", pads=[1, 1, 1, 1]))
    other.initializer.append(_w("W3", (4, 4, 3, 3)))
    return model


@pytest.mark.parametrize("method", ["minmax", "auto"])
def test_a_branch_the_data_never_takes_stays_float(method):
    """Only the then branch runs on these feeds: else_conv2 reads a tensor of the else branch, which has no
    range, and keeps float inputs (rule not-run); the model runs both ways and the then branch is quantized."""
    feeds = [{"x": (RNG.standard_normal((1, 3, 8, 8)) + 3.0).astype(np.float32)} for _ in range(16)]
    config = QuantConfig(activations=MINMAX) if method == "minmax" else QuantConfig()
    model = if_model_deep_else()
    result = onnxq.quantize(model, feeds, config)
    not_run = {s.node for s in result.report.skipped if s.rule == "not-run"}
    assert not_run == {"else_conv2"} and {"then_conv1", "then_conv2"} <= set(result.report.quantized_nodes)
    import onnxruntime as ort
    f = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    taken_else = {"x": (RNG.standard_normal((1, 3, 8, 8)) - 3.0).astype(np.float32)}
    a, b = f.run(None, taken_else)[0], q.run(None, taken_else)[0]
    sqnr = 10 * np.log10(np.sum(a ** 2) / max(np.sum((a - b) ** 2), 1e-20))
    assert sqnr > 25  # else_conv (x and W1 quantized) is close; else_conv2 computes in float


def test_exclusions_naming_body_nodes_act_without_a_false_warning(caplog):
    """--exclude-node / --exclude-op act in bodies (placement applies them per scope), so the check for
    exclusions that match nothing must look there too: a body node's name is not 'nothing'."""
    model, feeds = if_model(), [{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32) + 0.5} for _ in range(4)]
    with caplog.at_level("WARNING", logger="onnxq"):
        result = onnxq.quantize(model, feeds, QuantConfig(activations=MINMAX, exclude_nodes=("then_conv2",),
                                                          exclude_ops=("Relu",)))
    assert not [r for r in caplog.records if "excludes nothing" in r.getMessage()]
    assert "then_conv2" not in result.plan.quantized_nodes and "then_conv1" in result.plan.quantized_nodes
    caplog.clear()
    with caplog.at_level("WARNING", logger="onnxq"):
        onnxq.quantize(model, feeds, QuantConfig(activations=MINMAX, exclude_nodes=("no_such_node",)))
    assert [r for r in caplog.records if "'no_such_node' excludes nothing" in r.getMessage()]


def test_compare_per_layer_sees_tensors_inside_bodies():
    """`onnxq compare --per-layer` on an If model: the then-branch tensors are compared as if the branch
    were the graph itself (the same nodes at top level, quantized the same way, give the same figures), and
    a branch the data never takes lists nothing."""
    from onnxq.analysis.compare import compare

    then = next(a.g for a in if_model().graph.node[-1].attribute if a.name == "then_branch")
    flat = _model(list(then.node), [_vi("x", TP.FLOAT, [1, 3, 8, 8])], [_vi("t", TP.FLOAT, [1, 4, 8, 8])],
                  [_w("W1", (4, 3, 3, 3)), *then.initializer])
    model = if_model()
    w1 = next(t for t in model.graph.initializer if t.name == "W1")
    flat.graph.initializer[0].CopyFrom(w1)  # the same weights in both
    feeds = [{"x": (RNG.standard_normal((1, 3, 8, 8)) + 1.0).astype(np.float32)} for _ in range(6)]  # then
    config = QuantConfig(activations=MINMAX)  # bias correction on: measured in the branch as at top level
    q_if, q_flat = onnxq.quantize(model, feeds, config).model, onnxq.quantize(flat, feeds, config).model
    in_body = {r.tensor: r for r in compare(model, q_if, from_iterable(feeds), per_layer=True).layers}
    at_top = {r.tensor: r for r in compare(flat, q_flat, from_iterable(feeds), per_layer=True).layers}
    for tensor in ("a", "b"):
        assert in_body[tensor].sqnr_db == pytest.approx(at_top[tensor].sqnr_db, abs=1e-6)
        assert in_body[tensor].role == at_top[tensor].role
    assert in_body["b"].role == "activation"  # its Q/DQ pair inside the branch was found
    assert in_body["b"].pre_qdq_sqnr_db == pytest.approx(at_top["b"].pre_qdq_sqnr_db, abs=1e-6)
    assert in_body["W2"].role == "weight"  # a branch initializer's weight error too
    negative = [{"x": (RNG.standard_normal((1, 3, 8, 8)) - 1.0).astype(np.float32)} for _ in range(3)]
    taken_else = {r.tensor for r in compare(model, q_if, from_iterable(negative), per_layer=True).layers}
    assert "a" not in taken_else and "e0" in taken_else


def test_dump_holds_tensors_inside_bodies():
    """`onnxq compare --dump`: a then-branch tensor's value is the one the same nodes give at top level."""
    import onnxruntime as ort

    from onnxq.analysis.dump import dump_tensors
    from onnxq.collect.augment import expose

    model = if_model()
    then = next(a.g for a in model.graph.node[-1].attribute if a.name == "then_branch")
    flat = _model(list(then.node), [_vi("x", TP.FLOAT, [1, 3, 8, 8])], [_vi("t", TP.FLOAT, [1, 4, 8, 8])],
                  [next(t for t in model.graph.initializer if t.name == "W1"), *then.initializer])
    feed = {"x": (RNG.standard_normal((1, 3, 8, 8)) + 1.0).astype(np.float32)}
    q_if = onnxq.quantize(model, [feed] * 4, QuantConfig(activations=MINMAX)).model
    f_vals, q_vals = next(iter(dump_tensors(model, q_if, from_iterable([feed]))))
    session = ort.InferenceSession(expose(flat, ["a", "b"]).SerializeToString(), providers=["CPUExecutionProvider"])
    a, b = session.run(["a", "b"], feed)
    np.testing.assert_allclose(f_vals["a"], a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f_vals["b"], b, rtol=1e-6, atol=1e-6)
    assert q_vals["b"].shape == b.shape and "y" in f_vals and "y" in q_vals
    assert "e0" in f_vals and f_vals["e0"].size == 0  # the else branch did not run: empty


@pytest.mark.parametrize("target", [Target.TENSORRT, Target.ORT_CPU])
@pytest.mark.parametrize("case", sorted(CASES))
def test_gated_model_switches_units_inside_bodies(case, target):
    """Sensitivity and the fallback run one gated model (onnxq.rewrite.gates): for units inside bodies,
    each subset of gates on must give what insert_qdq writes for the plan restricted to that subset."""
    from helpers import ort_run, restrict_plan

    from onnxq import api
    from onnxq.collect.collectors import collect as collect_stats
    from onnxq.rewrite import insert_qdq
    from onnxq.rewrite.gates import QuantForm, build_gated

    build, feed = CASES[case]
    config = QuantConfig(target=target, activations=MINMAX)
    pre, _ = api.prepare(build())
    qplan = plan(pre, config)
    feeds = [feed() for _ in range(6)]
    stats, _ = collect_stats(pre, qplan, from_iterable(feeds), config)
    params = onnxq.solve(stats, qplan, config)
    dq_only = target is Target.ORT_CPU
    gated = build_gated(pre, qplan, params, form=QuantForm(dq_only=dq_only))
    units = gated.units
    assert units and set(units) == set(qplan.quantized_nodes)
    top = {n.name for n in pre.graph.node}
    assert any(u not in top for u in units)  # units inside bodies are gated
    assert set(gated.if_nodes) <= {n.name for n in gated.model.graph.node}  # top-level nodes (segments cut there)

    def run(model, fd):
        return ort_run(model, fd, prepack=False)  # optimizations off; unpacked weights: one summation order

    subsets = [()] + [(u,) for u in units] + [tuple(v for v in units if v != u) for u in units] + [units]
    for subset in subsets:
        want = run(insert_qdq(pre, restrict_plan(qplan, set(subset)), params, dq_only=dq_only), feeds[0])
        got = run(gated.model, {**feeds[0], **gated.feed(subset)})
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w, err_msg=f"{case} {target} subset {subset}")


def _if_with_constant_node_bias() -> onnx.ModelProto:
    """If(mean(x) > 0) whose then-branch Conv takes its bias from a Constant node inside the branch
    (folding does not reach bodies, so bodies keep their Constant nodes), its weight from the outer scope."""
    bias = numpy_helper.from_array((RNG.standard_normal(4) * 0.5).astype(np.float32), "bias_value")
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["b_then"], name="then_bias", value=bias),
         helper.make_node("Conv", ["x", "W1", "b_then"], ["a"], name="then_conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["t"], name="then_relu")],
        "then", [], [_vi("t", TP.FLOAT, [1, 4, 8, 8])])
    other = helper.make_graph(
        [helper.make_node("Conv", ["x", "W1"], ["e0"], name="else_conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["e0"], ["e"], name="else_relu")],
        "else", [], [_vi("e", TP.FLOAT, [1, 4, 8, 8])])
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then, else_branch=other)]
    inits = [_w("W1", (4, 3, 3, 3)), numpy_helper.from_array(np.array(0, np.float32), "zero")]
    return _model(nodes, [_vi("x", TP.FLOAT, [1, 3, 8, 8])], [_vi("y", TP.FLOAT, [1, 4, 8, 8])], inits)


@pytest.mark.parametrize("target", [Target.TENSORRT, Target.ORT_CPU])
def test_bias_correction_of_a_constant_node_bias_in_a_body(target):
    """The corrected bias keeps its name (ort-cpu plans it as int32: renaming it was a KeyError) and each of
    auto's candidates corrects its own copy: the model auto writes is the one its method writes alone
    (a shift written into a shared attribute accumulated over the candidates)."""
    model = _if_with_constant_node_bias()
    feeds = [{"x": (RNG.standard_normal((1, 3, 8, 8)) + 0.8).astype(np.float32)} for _ in range(40)]
    auto = onnxq.quantize(model, feeds, QuantConfig(target=target))
    chosen = auto.report.choice.method
    alone = onnxq.quantize(model, feeds, QuantConfig(target=target, activations=ActivationSpec(method=chosen)))
    assert "then_conv" in auto.plan.quantized_nodes

    def constants(m):  # every initializer and Constant-node value, bodies included
        out = {}
        for g in _graphs(m.graph):
            out.update((t.name, t.SerializeToString()) for t in g.initializer)
            out.update((n.output[0], n.attribute[0].t.SerializeToString()) for n in g.node if n.op_type == "Constant")
        return out

    assert constants(auto.model) == constants(alone.model)
    uncorrected = onnxq.quantize(model, feeds, QuantConfig(target=target, activations=ActivationSpec(method=chosen),
                                                           weights=onnxq.WeightSpec(bias_correction=False)))
    assert constants(alone.model) != constants(uncorrected.model)  # the branch's bias was corrected
