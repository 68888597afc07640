"""Sensitivity ranking and automatic fallback (onnxq.analysis.sensitivity, fallback, segmented), checked
against plain QDQ models run by onnxruntime. The gated model they score: rewrite/test_gates.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import (
    MINMAX,
    SMALL_CNN,
    SMALL_CNN_WEIGHTS,
    SMALL_MLP,
    SMALL_MLP_WEIGHTS,
    ort_run,
    quantized_parts,
    random_feeds,
    ref_sqnr_db,
    restrict_plan,
)

from onnxq import api
from onnxq.analysis.fallback import choose_float_layers
from onnxq.analysis.sensitivity import GatedEvaluator, SensitivityOptions, sensitivity
from onnxq.config import FallbackRule, QuantConfig
from onnxq.errors import ConfigError
from onnxq.records import QuantParams, exclude_patterns
from onnxq.rewrite import insert_qdq
from onnxq.rewrite.gates import build_gated
from onnxq.testing import dq_inputs, model_from_text

# ------------------------------------------------------------------------------------------ sensitivity

def _bad_second_layer():
    """The MLP with the second layer's activation scale made 8x too coarse: clearly the sensitive one."""
    pre, qplan, params, feeds = quantized_parts(SMALL_MLP, SMALL_MLP_WEIGHTS, (1, 4), n=12)
    p = params["r"]
    params = {**params, "r": QuantParams(p.scale * 8, p.zero_point, p.axis, p.dtype, p.lo, p.hi)}
    return pre, qplan, params, feeds


@pytest.mark.parametrize("exact", [True, False])
def test_sensitivity_scores_match_reference_models_and_rank_the_bad_layer_first(exact):
    pre, qplan, params, feeds = _bad_second_layer()
    report, evaluator = sensitivity(pre, qplan, params, feeds, SensitivityOptions(workers=2, exact=exact))
    assert [l.node for l in report.layers] == ["MatMul_1", "MatMul_0"]
    assert report.evaluations == 5 and report.measure == "sqnr_db" and report.samples == 12
    refs = [ort_run(pre, f)[0] for f in feeds]
    for layer in report.layers:
        only = insert_qdq(pre, restrict_plan(qplan, {layer.node}), params)
        want = ref_sqnr_db(refs, [ort_run(only, f)[0] for f in feeds])
        assert layer.only.sqnr_db == pytest.approx(want, abs=1e-3)
    full = ref_sqnr_db(refs, [ort_run(insert_qdq(pre, qplan, params), f)[0] for f in feeds])
    assert report.all_quantized.sqnr_db == pytest.approx(full, abs=1e-3)
    by = {l.node: l for l in report.layers}
    # With two units, "all but MatMul_1" is "only MatMul_0".
    assert by["MatMul_1"].all_but.sqnr_db == pytest.approx(by["MatMul_0"].only.sqnr_db, abs=1e-9)
    assert by["MatMul_1"].gain == pytest.approx(by["MatMul_1"].all_but.sqnr_db - full, abs=1e-3)
    assert by["MatMul_1"].gain > by["MatMul_0"].gain > 0


def test_modes_one_and_loo_run_only_their_experiments():
    pre, qplan, params, feeds = _bad_second_layer()
    one, _ = sensitivity(pre, qplan, params, feeds, SensitivityOptions(mode="one", workers=1))
    loo, _ = sensitivity(pre, qplan, params, feeds, SensitivityOptions(mode="loo", workers=1))
    assert one.evaluations == 3 and all(l.all_but is None and l.only is not None for l in one.layers)
    assert loo.evaluations == 3 and all(l.only is None and l.gain is not None for l in loo.layers)
    assert one.layers[0].node == loo.layers[0].node == "MatMul_1"
    with pytest.raises(ConfigError, match="choose one of"):
        SensitivityOptions(mode="all")


def test_user_metric_in_both_forms_gives_the_same_ranking():
    pre, qplan, params, feeds = _bad_second_layer()

    def neg_mse(outputs):  # metric(outputs) -> float, higher is better
        return -float(np.mean([np.mean(o[0] ** 2) for o in outputs]))

    def pair(outputs_float, outputs_quant):  # compare's form
        return neg_mse(outputs_float), neg_mse(outputs_quant)

    calls = []
    a, ev = sensitivity(pre, qplan, params, feeds, SensitivityOptions(workers=1),
                        metric=lambda o: calls.append(len(o)) or neg_mse(o))
    b, _ = sensitivity(pre, qplan, params, feeds, SensitivityOptions(workers=1), metric=pair)
    assert a.measure == b.measure == "metric"
    assert a.float_metric == pytest.approx(neg_mse(ev.reference)) == pytest.approx(b.float_metric)
    assert set(calls) == {len(feeds)}  # called on the outputs of all samples at once
    for x, y in zip(a.layers, b.layers):
        assert x.node == y.node and x.gain == pytest.approx(y.gain) and x.only.metric == pytest.approx(y.only.metric)
    assert a.all_quantized.metric == pytest.approx(neg_mse(ev.outputs(ev.units)))


# ------------------------------------------------------------------------------------------ fallback

def test_fallback_moves_the_bad_layer_to_float_until_the_sqnr_target_holds():
    pre, qplan, params, feeds = _bad_second_layer()
    report, ev = sensitivity(pre, qplan, params, feeds, SensitivityOptions(mode="loo", workers=2))
    target = report.layers[0].all_but.sqnr_db - 0.01
    result = choose_float_layers(ev, report, FallbackRule(min_sqnr_db=target))
    assert result.float_nodes == ("MatMul_1",) and result.met
    step = result.steps[0]
    assert step.bought == pytest.approx(report.layers[0].gain) and step.after.sqnr_db >= target
    assert result.exclude_patterns == ("^MatMul_1$",)
    # Already met: nothing moves.
    assert choose_float_layers(ev, report, FallbackRule(min_sqnr_db=-50.0)).steps == ()
    # Cap only: the top N by sensitivity, each measured.
    capped = choose_float_layers(ev, report, FallbackRule(max_float_layers=2))
    assert set(capped.float_nodes) == {"MatMul_0", "MatMul_1"} and not capped.met
    assert capped.final.sqnr_db == pytest.approx(200.0)  # everything float
    # An unreachable target stops at the cap.
    stuck = choose_float_layers(ev, report, FallbackRule(max_float_layers=1, min_sqnr_db=1000.0))
    assert len(stuck.steps) == 1 and not stuck.met


def test_fallback_rule_validation_and_default_cap():
    with pytest.raises(ConfigError, match="stopping rule"):
        FallbackRule()
    with pytest.raises(ConfigError):
        FallbackRule(max_float_layers=-1)
    assert FallbackRule(min_sqnr_db=30).cap(113) == 11 and FallbackRule(min_sqnr_db=30).cap(4) == 1
    assert FallbackRule(min_sqnr_db=30).cap(72, heavy=64) == 6  # 10 % of the Conv/Gemm/MatMul units
    assert FallbackRule(min_sqnr_db=30).cap(72, heavy=0) == 7
    assert FallbackRule(max_float_layers=50).cap(10) == 10
    pre, qplan, params, feeds = _bad_second_layer()
    report, ev = sensitivity(pre, qplan, params, feeds, SensitivityOptions(mode="loo", workers=1))
    with pytest.raises(ConfigError, match="metric"):
        choose_float_layers(ev, report, FallbackRule(max_metric_drop=1.0))


def test_fallback_select_sqnr_decides_by_output_sqnr_not_by_the_metric():
    pre, qplan, params, feeds = _bad_second_layer()
    report, ev = sensitivity(pre, qplan, params, feeds, SensitivityOptions(mode="loo", workers=1))
    favoured = ev.outputs(["MatMul_1"])  # MatMul_0 in float: the metric below peaks there

    def metric(outputs_float, outputs_quant):  # an unreachable float score: the cap stops it
        return 1.0, -float(sum(np.abs(o[0] - f[0]).sum() for o, f in zip(outputs_quant, favoured)))

    from onnxq.analysis.sensitivity import GatedEvaluator

    mev = GatedEvaluator(ev.gated, feeds, metric=metric, workers=1)
    by_metric = choose_float_layers(mev, report, FallbackRule(max_float_layers=1, max_metric_drop=0.0))
    by_sqnr = choose_float_layers(mev, report, FallbackRule(max_float_layers=1, max_metric_drop=0.0, select="sqnr"))
    assert by_metric.float_nodes == ("MatMul_0",) and by_metric.final.metric == 0.0
    assert by_sqnr.float_nodes == ("MatMul_1",)  # the bad layer: the larger SQNR gain
    assert by_sqnr.final.sqnr_db > by_metric.final.sqnr_db
    step = by_sqnr.steps[0]
    assert step.bought == pytest.approx(step.after.metric - step.before.metric)  # still reported in the metric
    with pytest.raises(ConfigError, match="selection"):
        FallbackRule(max_float_layers=1, select="best")


class _TableEvaluator:
    """A stand-in evaluator scoring configurations from a table: {frozenset(float units): Score}."""

    def __init__(self, units, table, float_metric):
        self.units, self.table, self.float_metric = tuple(units), table, float_metric
        self.workers, self.exact = 1, True

    def score(self, quantized):
        return self.table[frozenset(self.units) - frozenset(quantized)]

    def scores(self, configs, **_):
        return [self.score(c) for c in configs]


def test_fallback_rejects_a_metric_gain_that_lowers_the_output_sqnr():
    from onnxq.records import LayerSensitivity, Score, SensitivityReport

    units = ("a", "b", "c")
    table = {frozenset(): Score(20.0, 0.99, 90.0),
             frozenset("a"): Score(19.0, 0.98, 93.0),  # the best metric, but the outputs move away from float
             frozenset("b"): Score(21.0, 0.99, 92.0),
             frozenset("c"): Score(20.5, 0.99, 90.0),  # buys nothing in the metric: dropped
             frozenset("ab"): Score(20.0, 0.99, 93.5), frozenset("bc"): Score(21.5, 0.99, 92.0)}
    layers = tuple(LayerSensitivity(u, "Conv", k, None, None, 1.0 - k, 0.0, None) for k, u in enumerate(units))
    report = SensitivityReport("metric", 8, 93.0, table[frozenset()], layers, 4, 0.0)
    ev = _TableEvaluator(units, table, 93.0)
    result = choose_float_layers(ev, report, FallbackRule(max_float_layers=1, max_metric_drop=0.5))
    assert result.float_nodes == ("b",) and result.steps[0].bought == pytest.approx(2.0)
    # "a" stays a candidate: with "b" in float, it raises the SQNR no more (20.0 < 21.0), still rejected.
    result = choose_float_layers(ev, report, FallbackRule(max_float_layers=2, max_metric_drop=0.5))
    assert result.float_nodes == ("b",) and not result.met


def test_exclude_patterns_match_exactly_the_named_nodes():
    names = ["/blocks.1/conv/Conv", "a+b(c)", "x"]
    pats = exclude_patterns(names)
    others = ["/blocks.10/conv/Conv", "/blocks.1/conv/Conv_1", "aab(c)", "xx", "/blocks.1/conv/Con"]
    for name, pat in zip(names, pats):
        assert re.search(pat, name)
        assert not any(re.search(pat, o) for o in others)


def test_quantize_with_fallback_writes_an_ordinary_plan_without_the_chosen_layer():
    model = model_from_text(SMALL_CNN, weights=SMALL_CNN_WEIGHTS)
    feeds = random_feeds((1, 3, 8, 8), 6)
    result, fb, ranking = api.quantize_with_fallback(
        model, feeds, QuantConfig(activations=MINMAX), FallbackRule(max_float_layers=1), eval_data=random_feeds((1, 3, 8, 8), 4, seed=9))
    assert len(fb.steps) == 1 and fb.float_nodes[0] == ranking.layers[0].node
    node = fb.float_nodes[0]
    assert not any(dq_inputs(result.model)[node])  # no Q/DQ feeds the float layer
    assert result.report.config["exclude_nodes"] == [f"^{re.escape(node)}$"]
    assert fb.verified is not None and fb.verified_met is None  # no target: nothing to verify against
    assert fb.verified.sqnr_db == pytest.approx(fb.final.sqnr_db, abs=1.0)
    # The recorded config reproduces the model.
    again = api.quantize(model, feeds, QuantConfig.from_dict(result.report.config))
    a = ort_run(again.model, feeds[0])[0]
    np.testing.assert_array_equal(a, ort_run(result.model, feeds[0])[0])


def test_evaluator_scores_a_rewritten_model_like_the_gated_one():
    pre, qplan, params, feeds = quantized_parts(SMALL_MLP, SMALL_MLP_WEIGHTS, (1, 4))
    ev = GatedEvaluator(build_gated(pre, qplan, params), feeds, workers=1, exact=True)
    gated = ev.score(ev.units)
    # Last-bit differences only: MatMul pre-packs a constant B (the gated branch) but not a DQ output.
    for form in (True, False):
        got = ev.score_model(insert_qdq(pre, qplan, params, dq_only=form))
        assert got.sqnr_db == pytest.approx(gated.sqnr_db, abs=1e-4) and got.cosine == pytest.approx(gated.cosine)


# ------------------------------------------------------------------------------------------ segments

def test_segments_chained_equal_the_whole_gated_model():
    from onnxq.analysis.segmented import SegmentRunner

    pre, qplan, params, feeds = quantized_parts(SMALL_CNN, SMALL_CNN_WEIGHTS, (1, 3, 8, 8))
    gated = build_gated(pre, qplan, params)
    runner = SegmentRunner(gated, 3, exact=True, threads=1)
    assert len(runner.segments) == 3 and [s.first_unit for s in runner.segments] == [0, 1, 3]
    rng = np.random.default_rng(4)
    for _ in range(6):
        subset = [u for u in gated.units if rng.random() < 0.5]
        want = ort_run(gated.model, {**feeds[0], **gated.feed(subset)})
        got = runner.finish(0, dict(feeds[0]), gated.feed(subset))
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("memory_mb", [2048.0, 1e-6])  # the second cannot cache: whole-model runs
def test_segmented_sensitivity_equals_whole_model_runs(memory_mb):
    pre, qplan, params, feeds = quantized_parts(SMALL_CNN, SMALL_CNN_WEIGHTS, (1, 3, 8, 8))
    whole, _ = sensitivity(pre, qplan, params, feeds, SensitivityOptions(segments=1, exact=True, workers=2))
    cut, _ = sensitivity(pre, qplan, params, feeds,
                         SensitivityOptions(segments=3, exact=True, workers=2, memory_mb=memory_mb))
    assert cut.all_quantized == whole.all_quantized and cut.evaluations == whole.evaluations == 11
    assert [(l.node, l.only, l.all_but) for l in cut.layers] == [(l.node, l.only, l.all_but) for l in whole.layers]


def test_fallback_skips_the_ranking_when_the_quantized_model_already_meets_the_target():
    model = model_from_text(SMALL_CNN, weights=SMALL_CNN_WEIGHTS)
    feeds = random_feeds((1, 3, 8, 8), 4)
    result, fb, ranking = api.quantize_with_fallback(model, feeds, QuantConfig(activations=MINMAX), FallbackRule(min_sqnr_db=-100.0))
    assert ranking is None and fb.steps == () and fb.met and fb.verified_met and fb.evaluations == 1
    assert fb.verified == fb.start  # the gated model with every gate on computes the written model exactly
    assert result.report.config["exclude_nodes"] == []
