"""Automatic float fallback: keep the most sensitive layers in float until a stopping rule holds.

Greedy, on the gated model of :mod:`onnxq.analysis.sensitivity` (one session, a configuration is a
feed). Candidates come in sensitivity order (leave-one-out gain: what keeping the layer in float buys
with every other layer quantized). Each round evaluates the next ``lookahead`` (4) untried candidates in
parallel, each added alone to the layers already in float, and keeps the one that improves the deciding
measure most; a candidate that buys nothing is dropped (a float layer that buys nothing only costs
speed; with a metric over few samples, which moves in steps, many buy exactly nothing). It stops when the
rule holds, at ``max_float_layers``, when no candidate is left, or (``FallbackRule.min_step_gain``) when
the best candidate of a round buys less than that.

Rules (:class:`onnxq.config.FallbackRule`): a minimum worst-output SQNR (dB), a maximum drop of a user metric from
float (metric points, higher is better), and/or a maximum number of layers in float. With only the
maximum, the top N layers go to float (each step still measured). With a target and no maximum, at most
10 % of the Conv/ConvTranspose/Gemm/MatMul units (of all units when there are none; at least one) may go
to float, so at least 90 % of the compute-heavy layers stay quantized.

When a metric decides, a step must also raise the output SQNR: a layer whose float form moves the
outputs away from the float model's (quantization errors of layers partly cancel) cannot truly buy
accuracy, and on a few hundred samples such a "gain" is noise (measured on PP-OCR cls: +1.5 points on
the 200 search crops, -1.2 on the 500 evaluation crops, with the SQNR down 1.3 dB).
``select="sqnr"`` (``--fallback-select sqnr``) chooses each step by its output-SQNR gain instead, still
stopping on the rule: a metric over a few hundred samples moves one sample at a time, and the best of a
few candidates by that measure is largely noise that does not carry over to new samples.

With ``select="sqnr"`` a candidate that buys nothing is kept for the next round whenever the round
moved another layer to float (with the metric it is dropped): measured on YOLOX-Nano, the round that
moved the depthwise stem conv to float (7.8 -> 10.8 dB) had found the next layers' SQNR gains <= 0 next
to that dominant error, yet alone after it the first of them bought +1.4 dB.
With ``select="sqnr"`` the candidates are also *ordered* by SQNR alone, one layer at a time (each layer's
own error at the outputs, everything else float), and each round looks at ``SQNR_LOOKAHEAD`` (8) of them.
Why not leave one out there: once one layer dominates the error, removing any single other layer barely
moves the output, and what it moves is interaction noise (quantization errors of layers partly cancel).
Measured on YOLOX-Nano (TensorRT, entropy, 32 calibration images): with every layer quantized but its
depthwise stem conv, the output SQNR is 10.9 dB; leave one out credits the next pointwise conv (which
alone costs the outputs 14.5 dB) with -0.49 dB, so the search never tries it, while its one-at-a-time
loss ranks it first. One at a time is also independent of the layers already in float, so the order
stays valid after a large step; the lookahead absorbs what interactions do change (the 5th layer the
SQNR search chose there was 11th by one-at-a-time loss). Ranking by the metric instead would measure
one layer's effect on a few hundred samples of a metric that moves in whole-sample steps.

The chosen layers become exclusion patterns (``^name$``, regex-escaped), so the final model is an
ordinary plan and rewrite (``--exclude-node`` reproduces it) and the report lists each layer with what
it bought.

Why the steps run exactly (no graph optimization) while the ranking does not: optimized float kernels
round differently, a second draw of quantization noise. A ranking survives that, a decision near a
threshold does not. Measured on YOLOX-Nano (11 layers in float): the optimized estimate said mAP 33.11,
the written model scores 32.59, and the exact gated run with the same layers in float gives 32.59 too
(the rewrite with exclusions is identical to the gated configuration).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import onnx
from tqdm import tqdm

from onnxq.analysis.sensitivity import GatedEvaluator, Metric, SensitivityOptions, rank
from onnxq.collect.feeds import Feed
from onnxq.config import FallbackRule
from onnxq.errors import ConfigError
from onnxq.graph.ops import WEIGHTED
from onnxq.records import (
    FallbackResult,
    FallbackStep,
    QuantParams,
    QuantPlan,
    Score,
    SensitivityReport,
    Skip,
)
from onnxq.rewrite.gates import QuantForm, build_gated

log = logging.getLogger(__name__)

LOOKAHEAD = 4  # candidates tried per round (at least; more with more workers)
SQNR_LOOKAHEAD = 8  # with select="sqnr": the one-at-a-time order is a proxy for the gain in the current state


FALLBACK_RULE = "fallback"  # the Skip rule of a layer the automatic fallback left in float


def fallback_skips(skips: Sequence[Skip], result: FallbackResult) -> tuple[Skip, ...]:
    """``skips`` with the layers ``result`` left in float under their own rule, ``fallback``.

    The final plan excludes them by anchored ``--exclude-node`` patterns (so the recorded config
    reproduces the model), which placement reports as a user exclusion; the report says why instead."""
    measure = "output SQNR" if result.measure == "sqnr_db" else "the metric"
    reason = (f"kept in float by the fallback (--auto-fallback, or auto's own when its held-out result was poor): "
              f"among the layers whose float form gained the most {measure} (the fallback steps list each gain)")
    chosen = set(result.float_nodes)
    return tuple(dataclasses.replace(s, rule=FALLBACK_RULE, reason=reason)
                 if s.node in chosen and s.rule == "user-exclude" else s for s in skips)


def _measure(rule: FallbackRule, float_metric: float | None, default: str) -> str:
    if rule.max_metric_drop is not None:
        if float_metric is None:
            raise ConfigError("--max-metric-drop needs a metric: pass --metric-script FILE")
        return "metric"
    if rule.min_sqnr_db is not None:
        return "sqnr_db"
    return default


def _value(score: Score, measure: str) -> float:
    return score.measure(measure == "metric")


def _choice_key(rule: FallbackRule, measure: str, trial: Score, current: Score) -> tuple[float, float]:
    """What a candidate buys, compared across candidates: (deciding gain, tie-break gain).

    ``select="sqnr"`` decides by output SQNR and breaks ties by the measure: a metric over a few hundred
    samples moves in steps of one sample, and picking the best of a few candidates by it picks noise
    that does not carry over to other samples; the SQNR averages every output element."""
    gain_measure = _value(trial, measure) - _value(current, measure)
    gain_sqnr = trial.sqnr_db - current.sqnr_db
    return (gain_sqnr, gain_measure) if rule.select == "sqnr" else (gain_measure, gain_sqnr)


def choose_float_layers(
    evaluator: GatedEvaluator, report: SensitivityReport, rule: FallbackRule, *,
    lookahead: int | None = None, start: Score | None = None, progress: bool = False,
) -> FallbackResult:
    """Greedily move the most sensitive units of ``report`` to float until ``rule`` holds (see module doc).

    ``evaluator`` scores each step (it may differ from the one that ranked: the fallback of
    :func:`onnxq.api.quantize_with_fallback` decides on exact runs); each round tries the next
    ``lookahead`` candidates (default: the evaluator's workers, at least 4, or 8 with ``select="sqnr"``)
    and keeps the best. ``start``:
    the evaluator's score with every unit quantized, when already known.
    """
    float_metric = evaluator.float_metric if evaluator.float_metric is not None else report.float_metric
    measure = _measure(rule, float_metric, report.measure)
    op_types = {layer.node: layer.op_type for layer in report.layers}
    pool = [layer.node for layer in report.layers]
    cap = rule.cap(len(pool), sum(1 for n in pool if op_types.get(n) in WEIGHTED))
    width = lookahead or max(evaluator.workers, SQNR_LOOKAHEAD if rule.select == "sqnr" else LOOKAHEAD)
    quantized = set(evaluator.units)
    evaluations = int(start is None)
    start = current = start if start is not None else evaluator.score(quantized)
    steps: list[FallbackStep] = []
    bar = tqdm(total=cap, desc="fallback", unit="layer", disable=not progress, leave=False)
    while pool and len(steps) < cap and not rule.holds(current, float_metric):
        batch = pool[:width]
        trials = evaluator.scores([quantized - {c} for c in batch])
        evaluations += len(trials)
        best, noisy, idle = None, [], []
        for cand, trial in zip(batch, trials):
            key = _choice_key(rule, measure, trial, current)
            if rule.has_target and not key[0] > 0:
                idle.append(cand)  # buys nothing now
            elif measure == "metric" and not trial.sqnr_db > current.sqnr_db:
                noisy.append(cand)  # the outputs moved away from float: the metric's gain is noise
            elif best is None or key > best[0]:
                best = (key, cand, trial)
        # A metric's zero gain rarely changes with later steps: drop those candidates. An SQNR gain does:
        # next to a dominant error, a layer's own error is masked (or cancels), so it waits for the next state.
        retry = rule.select == "sqnr" and best is not None
        pool = [c for c in pool if c not in idle or retry]
        if best is None:
            pool = [c for c in pool if c not in noisy]  # nothing real to buy in this batch: drop them too
            continue
        _, cand, trial = best
        bought = _value(trial, measure) - _value(current, measure)
        if rule.min_step_gain is not None and bought < rule.min_step_gain and not rule.holds(trial, float_metric):
            log.info("fallback: the best next layer, %s, buys %+.4g (%s): less than %g, stopping", cand, bought,
                     measure, rule.min_step_gain)
            break
        steps.append(FallbackStep(cand, op_types.get(cand, "?"), current, trial, bought))
        log.info("fallback: %s to float bought %+.4g (%s)", cand, bought, measure)
        pool.remove(cand)
        quantized.discard(cand)
        current = trial
        bar.update(1)
    bar.close()
    return FallbackResult(rule, measure, float_metric, start, current, tuple(steps),
                          rule.holds(current, float_metric), evaluations, evaluator.exact)


def run_fallback(
    model: onnx.ModelProto,
    plan: QuantPlan,
    params: dict[str, QuantParams],
    feeds: Sequence[Feed],
    rule: FallbackRule,
    options: SensitivityOptions | None = None,
    *,
    metric: Metric | None = None,
    form: QuantForm | None = None,
    progress: bool = False,
) -> tuple[FallbackResult, SensitivityReport | None, GatedEvaluator]:
    """Choose the layers of the preprocessed ``model`` to leave in float: (result, ranking, exact evaluator).

    The fully quantized model is scored first (exactly); when it already meets the rule's target, no
    ranking is run (``ranking`` None). Otherwise the units are ranked (``options``; default leave one out,
    or one at a time by output SQNR alone with ``rule.select == "sqnr"``: module docstring) and
    :func:`choose_float_layers` decides on exact runs of the same gated model. ``form``: how the model
    will be written (:func:`onnxq.analysis.sensitivity.quant_form`), so the gated runs compute it.
    """
    by_sqnr = rule.select == "sqnr"
    options = options or SensitivityOptions(mode="one" if by_sqnr else "loo")
    gated = build_gated(model, plan, params, form=form)
    exact = GatedEvaluator(gated, feeds, metric=metric, workers=options.workers, exact=True)
    measure = _measure(rule, exact.float_metric, "metric" if exact.metric is not None else "sqnr_db")
    start = exact.score(exact.units)
    if rule.has_target and rule.holds(start, exact.float_metric):
        log.info("fallback: the fully quantized model already meets the target")
        return FallbackResult(rule, measure, exact.float_metric, start, start, (), True, 1, True), None, exact
    rank_metric = None if by_sqnr else metric  # select="sqnr" orders the candidates by SQNR too
    if options.exact and rank_metric is metric:
        ranker = exact
    else:
        ranker = GatedEvaluator(gated, feeds, metric=rank_metric, workers=options.workers, exact=options.exact)
    ranking = rank(ranker, {n.name: n.op_type for n in model.graph.node}, options, progress=progress)
    return choose_float_layers(exact, ranking, rule, start=start, progress=progress), ranking, exact
