"""The gated model (onnxq.rewrite.gates): one graph with a switch per quantized unit, checked against numpy
and plain QDQ models. Its use (sensitivity ranking, fallback): analysis/test_sensitivity.py; with user
exclusions: test_gates_exclusions.py.

Oracles: a numpy forward pass with hand-written fake quantization (MLP), and for every subset of units
the ordinary ``insert_qdq`` model of the plan restricted to that subset, run exactly by onnxruntime.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import (
    MINMAX,
    SMALL_CNN,
    SMALL_CNN_WEIGHTS,
    SMALL_MLP,
    SMALL_MLP_WEIGHTS,
    fake_quant,
    ort_run,
    quantized_parts,
    restrict_plan,
)
from onnx import numpy_helper

from onnxq.config import QuantConfig
from onnxq.records import Role
from onnxq.rewrite import insert_qdq
from onnxq.rewrite.gates import QuantForm, build_gated, corrections


def test_gated_mlp_matches_numpy_fake_quantization_for_every_subset():
    pre, qplan, params, feeds = quantized_parts(SMALL_MLP, SMALL_MLP_WEIGHTS, (1, 4))
    gated = build_gated(pre, qplan, params)
    assert set(gated.units) == {"MatMul_0", "MatMul_1"}
    weights = {t.name: numpy_helper.to_array(t) for t in pre.graph.initializer}
    p = params
    w1_key, w2_key = (qplan.spec_for(w, Role.WEIGHT).key for w in ("W1", "W2"))
    for subset in itertools.chain.from_iterable(itertools.combinations(gated.units, k) for k in range(3)):
        for feed in feeds[:3]:
            x = feed["x"]
            w1, w2 = weights["W1"], weights["W2"]
            if "MatMul_0" in subset:
                x = fake_quant(x, p["x"].scale)
                w1 = fake_quant(w1, p[w1_key].scale, p[w1_key].axis)
            r = np.maximum(x @ w1, 0)
            if "MatMul_1" in subset:
                r = fake_quant(r, p["r"].scale)
                w2 = fake_quant(w2, p[w2_key].scale, p[w2_key].axis)
            got = ort_run(gated.model, {**feed, **gated.feed(subset)})[0]
            np.testing.assert_allclose(got, r @ w2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["tensorrt", "ort-cpu"])
def test_gated_cnn_equals_restricted_qdq_model_for_every_subset(target):
    config = QuantConfig(activations=MINMAX, target=target)
    pre, qplan, params, feeds = quantized_parts(SMALL_CNN, SMALL_CNN_WEIGHTS, (1, 3, 8, 8), config)
    dq_only = target == "ort-cpu"
    gated = build_gated(pre, qplan, params, form=QuantForm(dq_only=dq_only))
    units = gated.units
    assert any(n.startswith("Add") for n in units)  # the residual Add is a unit (tensorrt) too
    subsets = [()] + [(u,) for u in units] + [tuple(v for v in units if v != u) for u in units] + [units]
    for subset in subsets:
        reference = insert_qdq(pre, restrict_plan(qplan, set(subset)), params, dq_only=dq_only)
        want = ort_run(reference, feeds[0])[0]
        got = ort_run(gated.model, {**feeds[0], **gated.feed(subset)})[0]
        np.testing.assert_array_equal(got, want, err_msg=f"subset {subset}")
    assert np.array_equal(ort_run(gated.model, {**feeds[0], **gated.feed(())})[0], ort_run(pre, feeds[0])[0])


def test_gated_feed_rejects_unknown_units():
    pre, qplan, params, _ = quantized_parts(SMALL_MLP, SMALL_MLP_WEIGHTS, (1, 4))
    with pytest.raises(KeyError):
        build_gated(pre, qplan, params).feed(["nope"])


MLP_BIAS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,6] x) => (float[1,3] y) {
  h = MatMul (x, W1)
  hb = Add (h, B1)
  r = Relu (hb)
  c = Gemm <transB=1> (r, G)
  y = MatMul (c, W2)
}
"""


@pytest.mark.parametrize("net", ["cnn", "mlp"])
def test_gated_model_follows_bias_correction_in_its_quantized_branches(net):
    from onnxq.analysis.activation_means import bias_corrected

    if net == "cnn":
        pre, qplan, params, feeds = quantized_parts(SMALL_CNN, SMALL_CNN_WEIGHTS, (1, 3, 8, 8))
    else:  # MatMul + Add bias, a Gemm without C (correction adds one), a MatMul with no bias to absorb it
        w = {"W1": (6, 5), "B1": (5,), "G": (4, 5), "W2": (4, 3)}
        pre, qplan, params, feeds = quantized_parts(MLP_BIAS, w, (1, 6))
    corrected = bias_corrected(pre, qplan, params, feeds)
    gated = build_gated(pre, qplan, params, form=QuantForm(corrected=corrected))
    written = insert_qdq(corrected, qplan, params)
    for feed in feeds[:3]:
        want = ort_run(written, feed)[0]
        got = ort_run(gated.model, {**feed, **gated.feed(gated.units)})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # MatMul's shift: one more rounding
        if net == "cnn":
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(ort_run(gated.model, {**feed, **gated.feed(())})[0], ort_run(pre, feed)[0])
    fix = corrections(pre, corrected)
    if net == "mlp":  # the Gemm gains a C input; the MatMul's correction lives in the following Add
        assert set(fix.inputs) == {("Gemm_0", 2)} and set(fix.after) == {"MatMul_0"}
    else:
        assert {n for n, _ in fix.inputs} == {n for n in qplan.quantized_nodes if n.startswith("Conv")}
