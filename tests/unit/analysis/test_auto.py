"""``--method auto`` (the default): held-out choice among the methods, final ranges from every feed."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import residual_net

import onnxq
from onnxq.analysis.auto import poor_margin, poor_outputs
from onnxq.analysis.heldout import OutputScore
from onnxq.config import ActivationSpec, QuantConfig
from onnxq.records import MethodChoice, OutputFigure


def _feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Mostly small inputs with a rare large spike: minmax spends its range on the spikes."""
    rng = np.random.default_rng(seed)
    feeds = []
    for i in range(n):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        if i % 7 == 0:
            x[0, 0, 0, 0] = 60.0
        feeds.append({"x": x})
    return feeds


def _initializers(model) -> dict[str, bytes]:
    return {t.name: t.SerializeToString() for t in model.graph.initializer}


def test_auto_keeps_the_best_scoring_method_and_its_model_is_that_method_on_all_feeds():
    model, feeds = residual_net(1), _feeds(40)
    result = onnxq.quantize(model, feeds, QuantConfig())
    choice = result.report.choice
    assert choice is not None and choice.held_out and choice.scoring == "8 of 40 calibration feeds held out"
    scores = dict(choice.scores)
    assert list(scores) == ["minmax", "percentile", "mse", "entropy"]
    assert scores[choice.chosen] >= max(scores.values()) - 0.05  # the best, up to the documented tie rule
    assert result.report.method == f"auto: {choice.chosen}" and result.report.samples == 40
    explicit = onnxq.quantize(model, feeds, QuantConfig(activations=ActivationSpec(method=choice.chosen)))
    assert _initializers(result.model) == _initializers(explicit.model)  # ranges from all 40 feeds


def test_auto_is_deterministic():
    model, feeds = residual_net(1), _feeds(24, seed=3)
    a = onnxq.quantize(model, feeds, QuantConfig()).model.SerializeToString()
    b = onnxq.quantize(model, feeds, QuantConfig()).model.SerializeToString()
    assert a == b


def test_few_feeds_are_scored_in_sample_and_the_report_says_so():
    result = onnxq.quantize(residual_net(1), _feeds(5), QuantConfig())
    choice = result.report.choice
    assert not choice.held_out and "in-sample" in choice.scoring and len(choice.scores) == 4
    assert result.report.samples == 5


def test_statistics_without_data_keep_mse_and_say_why():
    model, feeds = residual_net(1), _feeds(10)
    stats = onnxq.quantize(model, feeds, QuantConfig(), histograms=True).stats
    result = onnxq.quantize(model, None, QuantConfig(), stats=stats)
    assert result.report.choice.chosen == "mse" and not result.report.choice.scores
    assert "no calibration data" in result.report.choice.reason


def test_explicit_method_has_no_choice():
    result = onnxq.quantize(residual_net(1), _feeds(10), QuantConfig(activations=ActivationSpec(method="minmax")))
    assert result.report.choice is None and result.report.method == "minmax"


@pytest.mark.parametrize("sqnr,worst,tail,poor", [(30.0, 12.0, None, False), (9.0, 5.0, None, True),
                                                  (25.0, -1.0, None, True), (10.0, 0.0, None, False),
                                                  (26.0, 5.8, 7.0, True), (15.8, 2.9, 12.2, False),
                                                  (15.0, 10.0, 10.0, False)])
def test_poor_held_out_figures(sqnr, worst, tail, poor):
    choice = MethodChoice("mse", (("mse", worst),), "8 of 40 calibration feeds held out", True,
                          (OutputFigure("y", sqnr, "axis 1 index 3", worst, tail),))
    assert bool(poor_outputs(choice)) is poor
    if tail is not None:  # poor_margin is negative exactly when poor_outputs names the output
        score = OutputScore("y", "float", sqnr, worst, worst, 1, 22, 3, tail_sqnr_db=tail)
        assert (poor_margin([score]) < 0) is poor


def test_poor_result_warns_with_the_outputs_to_blame(monkeypatch, caplog):
    seen = []

    def judge(choice):
        seen.append(choice)
        return ["output 'y' at 3.0 dB SQNR (under 10)"]

    monkeypatch.setattr(onnxq.api, "poor_outputs", judge)
    with caplog.at_level("WARNING"):
        result = onnxq.quantize(residual_net(1), _feeds(16), QuantConfig())
    assert seen == [result.report.choice]
    warning = next(r.getMessage() for r in caplog.records if "far from float" in r.getMessage())
    assert "output 'y' at 3.0 dB" in warning and "3 of 16 calibration feeds held out" in warning


def test_html_report_shows_the_choice():
    from onnxq.report.html import render_html

    result = onnxq.quantize(residual_net(1), _feeds(16), QuantConfig())
    page = render_html(result.report, result.plan)
    choice = result.report.choice
    assert "Method: auto" in page and f"{choice.chosen} (kept)" in page
    assert "twentieth-worst slice SQNR dB" in page and choice.outputs[0].tail_sqnr_db is not None
    assert all(name in page for name, _ in choice.scores) and choice.scoring in page


def test_auto_fallback_starts_from_what_auto_keeps():
    from onnxq.config import FallbackRule

    model, feeds = residual_net(1), _feeds(16)
    plain = onnxq.quantize(model, feeds, QuantConfig())
    result, fallback, _ = onnxq.api.quantize_with_fallback(model, feeds, QuantConfig(),
                                                          FallbackRule(max_float_layers=1))
    assert result.report.choice == plain.report.choice and result.report.method == plain.report.method
    recorded = result.report.config["activations"]["method"]
    assert recorded == plain.report.choice.method  # the fallback ran with the kept method
    assert len(fallback.steps) <= 1


def test_a_metric_replaces_the_slice_score() -> None:
    """A metric that scores each candidate by minus its worst-slice SQNR makes auto keep the candidate the
    slice score ranks last: the metric, not the slice score, decides (and the report says so)."""
    from onnxq import api
    from onnxq.analysis.heldout import model_score, output_scores

    model, feeds = _metric_case()
    names = [o.name for o in model.graph.output]

    def perverse(reference, quantized):
        return 0.0, -model_score(output_scores(reference, quantized, names))

    plain = api.quantize(model, feeds)
    by_metric = api.quantize(model, feeds, metric=perverse)
    assert by_metric.report.choice.by_metric and not plain.report.choice.by_metric
    slice_scores = dict(plain.report.choice.scores)
    assert len(set(slice_scores.values())) > 1  # the candidates differ
    chosen = by_metric.report.choice.chosen
    assert slice_scores[chosen] <= min(slice_scores.values()) + 0.01  # (the report rounds to 0.01 dB)
    metric_scores = dict(by_metric.report.choice.scores)
    assert metric_scores[chosen] == max(metric_scores.values())
    assert all(abs(metric_scores[k] + slice_scores[k]) < 0.01 for k in slice_scores)


def _metric_case():
    return residual_net(1), _feeds(40)


def test_a_softmax_output_is_ranked_on_its_logits_and_judged_on_its_probabilities() -> None:
    """Candidate A scales the logits by 1.1 (a 20 dB error on every logit, invisible in the sure samples'
    probabilities); candidate B shifts one logit by 0.3 (34 dB on logits, but it moves the two borderline
    samples' probabilities most). Probabilities would keep A; the logits, what the model computes, keep B.
    The held-out figures are B's probabilities, as the poor line reads them."""
    from onnx import TensorProto, helper

    from onnxq.analysis.auto import choose
    from onnxq.analysis.heldout import output_scores

    def softmax_of(op: str, value: list[float]):
        nodes = [helper.make_node(op, ["x", "c"], ["l"]), helper.make_node("Softmax", ["l"], ["y"], axis=1)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                                  [helper.make_tensor("c", TensorProto.FLOAT, [2], value)])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    rng = np.random.default_rng(0)
    sure = [np.array([[8.0, -8.0]]) * rng.choice([-1, 1]) + rng.normal(scale=0.5, size=(1, 2)) for _ in range(30)]
    feeds = [{"x": x.astype(np.float32)} for x in sure + [np.array([[0.1, -0.1]]), np.array([[-0.1, 0.1]])]]
    float_model = softmax_of("Mul", [1.0, 1.0])
    a, b = softmax_of("Mul", [1.1, 1.1]), softmax_of("Add", [0.3, 0.0])
    k, choice = choose([("a", lambda: a), ("b", lambda: b)], float_model, feeds, "32 feeds", True)
    assert k == 1 and choice.chosen == "b"

    def probs(model):
        import onnxruntime as ort
        s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return [s.run(None, f) for f in feeds]

    plain_a = output_scores(probs(float_model), probs(a), ["y"])[0]
    plain_b = output_scores(probs(float_model), probs(b), ["y"])[0]
    assert plain_a.sqnr_db > plain_b.sqnr_db + 10  # on probabilities A looks far better
    assert choice.outputs[0].sqnr_db == pytest.approx(plain_b.sqnr_db, abs=0.01)  # figures: B's probabilities
    assert dict(choice.scores)["b"] == pytest.approx(34.0, abs=1.5)  # the ranking figures: logits
    assert dict(choice.scores)["a"] == pytest.approx(20.0, abs=0.1)
    assert choice.log_probability_outputs == ("y",)  # the report says which outputs were ranked so
    from onnxq.report.render import choice_line
    assert "output 'y' ranked as centred log-probabilities" in choice_line(choice)
