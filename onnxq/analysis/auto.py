"""``--method auto``: solve with every method from one collection, keep the model that serves the outputs best.

Statistics are collected once, with histograms, on the calibration feeds that are not held out
(:func:`onnxq.analysis.heldout.split_feeds`); every candidate method is solved from them (solving is pure
and cheap), written, and run on the held-out feeds next to the float model. Each candidate is scored by
the worst slice SQNR over all outputs (:func:`onnxq.analysis.heldout.model_score`): a whole-output norm
would let box coordinates hide destroyed class scores. An output of probability distributions (a softmax)
is ranked on centred log-probabilities, i.e. on its logits (:func:`onnxq.analysis.heldout.centred_log`:
on probabilities one or two borderline held-out samples decide the ranking), while its held-out figures
and the poor line stay on the probabilities the task reads (on log-probabilities the padding steps of a
recogniser, near-flat logits, read 6.7 dB and would call a good model poor). The best score wins (worst slices within 0.05 dB
tie and the mean slice SQNR decides: :func:`onnxq.analysis.heldout.ranking_key`); a full tie goes to the
earlier candidate (the order is fixed, so the choice is deterministic).

Candidates run with onnxruntime's float optimizations on and Q/DQ kept as fake quantization
(``fake_quant``): constant weights fold once instead of being re-quantized on every run, which keeps the
search cheap on big models; the activations, which is what the candidates differ in, are quantized exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from onnxq import runtime
from onnxq.analysis.heldout import OutputScore, model_score, output_scores, ranking_key
from onnxq.records import MethodChoice, OutputFigure

log = logging.getLogger(__name__)

Feed = Mapping[str, np.ndarray]
Outputs = Sequence[Sequence[np.ndarray]]  # [feed][output]


def run_outputs(model: onnx.ModelProto, feeds: Sequence[Feed], *, quantized: bool) -> list[list[np.ndarray]]:
    """Every output of ``model`` on each feed (one session): ``[feed][output]``."""
    session = runtime.make_session(model, optimize=True, fake_quant=quantized)
    return [list(runtime.run(session, feed)) for feed in feeds]


def choose(
    candidates: Sequence[tuple[str, Callable[[], onnx.ModelProto]]],
    float_model: onnx.ModelProto,
    feeds: Sequence[Feed],
    scoring: str,
    held_out: bool,
    metric: Callable[[Outputs, Outputs], tuple[float, float]] | None = None,
) -> tuple[int, MethodChoice]:
    """Score each candidate (name, a function writing its model) on ``feeds`` against ``float_model``:
    (index of the best, the record of the choice). Models are written and dropped one at a time.

    ``metric`` (the user's ``--metric-script``, in its pair form): when given it replaces the worst-slice
    score (its quantized value, higher is better; the slice SQNR breaks its ties).
    """
    names = [o.name for o in float_model.graph.output]
    reference = run_outputs(float_model, feeds, quantized=False)
    best: tuple[int, tuple, list] | None = None
    scores: list[tuple[str, float]] = []
    for k, (name, write) in enumerate(candidates):
        outputs = run_outputs(write(), feeds, quantized=True)
        per_output = output_scores(reference, outputs, names)  # the figures poor is judged on
        ranked = output_scores(reference, outputs, names, log_probabilities=True)
        key: tuple = ranking_key(ranked)
        if metric is not None:
            value = float(metric(reference, outputs)[1])
            scores.append((name, value))
            log.info("auto: %s scores %.6g by the metric", name, value)
            key = (value, *key)
        else:
            score = model_score(ranked)
            scores.append((name, round(float(score), 2)))
            log.info("auto: %s scores %.2f dB (worst slice over all outputs)", name, score)
        if best is None or key > best[1]:
            best = (k, key, per_output, ranked)
    assert best is not None, "no candidates"
    k, _, per_output, ranked = best
    figures = tuple(_figure(s) for s in per_output if s.scored)
    logs = tuple(s.output for s in ranked if s.log_probabilities)
    return k, MethodChoice(candidates[k][0], tuple(scores), scoring, held_out, figures, by_metric=metric is not None,
                           feeds=len(feeds), log_probability_outputs=logs)


# A held-out result is poor when an output's error power reaches a tenth of its signal, when one slice of
# an output (a channel, a class score column) has more error than signal, or when a twentieth of its slices
# have error power over a tenth of their signal (OutputScore.tail_db under 10 dB). The last rule: a YOLOv8
# head (nudenet 320n, 18 class-score columns next to 4 box columns) with its class columns at 6-10 dB
# gives box F1 0.78 against float, while the whole output reads 26 dB and no slice is under 0 dB; MiniLM's
# one outlier embedding dimension (2.6 dB, 381 live dimensions, Spearman 81.6 against 82.0) is not flagged by
# it (a uniform 10 dB line for every slice flagged it: 4 MatMuls went float and Spearman fell to 81.4).
# Measured on the benchmark models: only YOLOX-Nano is flagged (whole output 7.4 dB, its class-score
# columns -4.5 dB: 28.5 mAP against 33.9 float).
POOR_OUTPUT_DB = 10.0
POOR_SLICE_DB = 0.0
POOR_TAIL_DB = POOR_OUTPUT_DB
# The fallback moves layers to float on the held-out evidence only when there is enough of it: on fewer
# feeds a class-score slice holds a value or two per class, and its SQNR says little (EfficientNet-Lite0
# on 8 photos, 2 held out, looked poor and lost 4 layers to float; on 100 photos, 20 held out, it is not).
MIN_FALLBACK_FEEDS = 8


def poor_outputs(choice: MethodChoice) -> list[str]:
    """One phrase per output whose held-out figures are poor (empty: nothing to warn about)."""
    out = []
    for o in choice.outputs:
        if o.sqnr_db < POOR_OUTPUT_DB:
            out.append(f"output {o.output!r} at {o.sqnr_db:.1f} dB SQNR (under {POOR_OUTPUT_DB:g})")
        elif o.worst_sqnr_db < POOR_SLICE_DB:
            out.append(f"output {o.output!r} slice {o.worst_slice} at {o.worst_sqnr_db:.1f} dB (more error "
                       "than signal)")
        elif o.tail_sqnr_db is not None and o.tail_sqnr_db < POOR_TAIL_DB:
            out.append(f"output {o.output!r}: a twentieth of its slices under {POOR_TAIL_DB:g} dB (worst "
                       f"{o.worst_slice} at {o.worst_sqnr_db:.1f} dB)")
    return out


def poor_margin(scores: Sequence[OutputScore]) -> float:
    """How far scored outputs are from poor, in dB: the least of (output SQNR - POOR_OUTPUT_DB), (worst
    slice - POOR_SLICE_DB) and (tail slice - POOR_TAIL_DB) over them; negative exactly when
    :func:`poor_outputs` would name one."""
    margins = [min(s.sqnr_db - POOR_OUTPUT_DB, s.worst_sqnr_db - POOR_SLICE_DB, s.tail_db - POOR_TAIL_DB)
               for s in scores if s.scored]
    return float(min(margins)) if margins else 0.0


# The fallback of a poor result aims this far clear of the poor line: the held-out feeds are few (at most
# 32), and a result that just crosses the line on them is poor on others. On YOLOX-Nano, crossing it (2
# layers in float) already cleared it by 3 dB here (32.8 mAP against 33.9 float).
FALLBACK_CLEARANCE_DB = 3.0
# ... and stops early when the best next layer wins back less than this (dB toward that aim): past the
# layers that carry the error, each further one buys a fraction of a dB and costs its int8 speed. Measured
# on YOLOX-Nano (aiming 6 dB clear): +3.3 and +4.1 dB for the first two, then +0.4, +0.2, +0.1 ... for nine
# more, 32.80 mAP with 11 in float against 32.82 with 2; on nudenet's YOLOv8n head +1.5, +2.7, +2.1, +1.2,
# +1.5, then +0.1 (box F1 against float 0.78 -> 0.90).
FALLBACK_MIN_STEP_DB = 1.0


def not_poor_metric(names: Sequence[str], clearance_db: float = FALLBACK_CLEARANCE_DB
                    ) -> Callable[[Outputs, Outputs], tuple[float, float]]:
    """A fallback metric (the ``(outputs_float, outputs_quant) -> (float, quant)`` form) whose drop is zero
    once every output is ``clearance_db`` clear of poor and otherwise the dB still missing: with
    ``max_metric_drop=0`` the fallback stops there, and ranks layers by the dB each one wins back (capped
    at what is missing: a layer that alone does it ranks first)."""
    def metric(reference: Outputs, quantized: Outputs) -> tuple[float, float]:
        return 0.0, min(0.0, poor_margin(output_scores(reference, quantized, names)) - clearance_db)
    return metric


def _figure(score) -> OutputFigure:
    return OutputFigure(score.output, round(float(score.sqnr_db), 2), score.worst_slice_label,
                        round(float(score.worst_sqnr_db), 2), round(float(score.tail_db), 2))
