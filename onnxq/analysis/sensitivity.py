"""Sensitivity analysis: how much each quantized layer costs the model, measured at the model's outputs.

For every *unit* (a node the plan quantizes: Conv, Gemm, MatMul, a residual Add...) two experiments:

* one at a time (``only``): only this unit's inputs are fake-quantized, everything else runs in float;
  the error it alone causes;
* leave one out (``all_but``): every unit but this one is quantized; ``gain`` = score(all_but) -
  score(all quantized) is what keeping this one layer in float buys, interactions included. This is
  what the automatic fallback ranks by.

The score of a configuration, against the float model on the evaluation samples: SQNR (dB) and cosine of
the worst float output, each pooled over all samples (``10 log10(sum ref^2 / sum (ref - x)^2)``, as
``onnxq compare``), and optionally a user metric (higher is better, e.g. mAP) of the outputs of all
samples. A metric is a callable taking either ``(outputs)`` -> score, or ``(outputs_float,
outputs_quant)`` -> ``(float_score, quant_score)`` (the form ``onnxq compare --metric-script`` uses);
``outputs`` holds, per sample, the list of the model's outputs in graph order.

Cost: one session for everything. The model is rebuilt once as a gated model
(:mod:`onnxq.rewrite.gates`) where each unit is switched by a bool feed, so a configuration is just a
feed; the evaluation feeds and the float outputs are computed once and cached (evaluation sets are
small). Configurations run in parallel threads (onnxruntime releases the GIL), one intra-op thread each,
which on 2 cores beat one run with 2 intra-op threads. Unless ``exact`` is set, float kernels are
optimized (blocked convolution layouts) while Q/DQ stay fake quantization: rounding then differs from the
exact model like a second draw of quantization noise (measured: 28 dB from exact on EfficientNet-Lite0,
whose quantization SQNR is 19 dB), which leaves rankings intact at half the cost.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from onnxq import runtime
from onnxq.analysis.activation_means import bias_corrected
from onnxq.analysis.metrics import ErrorSums, accumulate
from onnxq.analysis.segmented import SegmentRunner, live_bytes, run_from_cuts
from onnxq.collect.feeds import Feed
from onnxq.config import QuantConfig
from onnxq.errors import ConfigError, OnnxqError
from onnxq.graph.usage import all_nodes
from onnxq.records import LayerSensitivity, QuantParams, QuantPlan, Score, SensitivityReport
from onnxq.rewrite.gates import GatedModel, QuantForm, build_gated, prequantized_weights

log = logging.getLogger(__name__)

Outputs = list[list[np.ndarray]]  # per sample, the model's outputs in graph order
Metric = Callable[..., Any]  # metric(outputs) -> float, or metric(outputs_float, outputs_quant) -> (f, q)
MODES = ("both", "one", "loo")


@dataclass(frozen=True)
class SensitivityOptions:
    """``mode``: "both", "one" (one at a time) or "loo" (leave one out); ``workers``: parallel runs
    (default: the CPU count); ``exact``: unoptimized float kernels (slower, bit-exact fake quantization);
    ``segments``: cuts of the model whose prefixes are cached (1 = whole-model runs), within
    ``memory_mb`` for the cached tensors (more falls back to whole-model runs)."""

    mode: str = "both"
    workers: int | None = None
    exact: bool = False
    segments: int = 8
    memory_mb: float = 2048.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"invalid sensitivity mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.segments < 1:
            raise ConfigError(f"segments must be >= 1, got {self.segments}")


class GatedEvaluator:
    """Scores quantization subsets of one gated model on cached evaluation feeds.

    Holds an onnxruntime session, the cached feeds and the float outputs. ``scores`` runs configurations
    in parallel threads on the one session (``InferenceSession.run`` is thread-safe).
    """

    def __init__(self, gated: GatedModel, feeds: Sequence[Feed], *, metric: Metric | None = None,
                 workers: int | None = None, exact: bool = False) -> None:
        if not feeds:
            raise OnnxqError("no evaluation samples: give at least one")
        self.gated = gated
        self.feeds = list(feeds)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.exact = exact
        self.threads = 1 if self.workers > 1 else None
        self.session = runtime.make_session(gated.model, optimize=not exact, fake_quant=True, threads=self.threads)
        self.evaluations = 0
        self._lock = threading.Lock()
        self.reference = self.outputs(())
        self._floating = [np.issubdtype(np.asarray(o).dtype, np.floating) for o in self.reference[0]]
        self.metric, self.float_metric = _bind_metric(metric, self.reference)

    @property
    def units(self) -> tuple[str, ...]:
        return self.gated.units

    def outputs(self, quantized: Iterable[str]) -> Outputs:
        gates = self.gated.feed(quantized)
        return [runtime.run(self.session, {**feed, **gates}) for feed in self.feeds]

    def score(self, quantized: Iterable[str]) -> Score:
        """The score with exactly the units in ``quantized`` quantized."""
        return self.score_thunks([lambda: self.outputs(quantized)])[0]

    def score_model(self, model: onnx.ModelProto) -> Score:
        """Score another model with the same inputs and outputs (a rewritten QDQ model), run exactly
        (no graph optimization) on the same samples against the same float outputs."""
        session = runtime.make_session(model)
        names = [o.name for o in model.graph.output]
        expected = [o.name for o in self.gated.model.graph.output]
        if names != expected:
            raise OnnxqError(f"model outputs {names[:3]} differ from the analysed model's {expected[:3]}")
        return self.score_outputs([runtime.run(session, feed) for feed in self.feeds])

    def score_outputs(self, outs: Outputs) -> Score:
        """SQNR and cosine of ``outs`` (per sample, all outputs) against the float outputs, and the metric."""
        sums = [ErrorSums() for _ in self._floating]
        for ref, out in zip(self.reference, outs):
            for k, (r, x) in enumerate(zip(ref, out)):
                if self._floating[k]:
                    sums[k] = accumulate(sums[k], r, x)
        used = [s for s, f in zip(sums, self._floating) if f] or [ErrorSums()]
        value = self.metric(outs) if self.metric is not None else None
        return Score(min(s.sqnr_db for s in used), min(s.cosine for s in used), value)

    def scores(self, configs: Sequence[Iterable[str]], *, progress: bool = False, desc: str = "sensitivity"
               ) -> list[Score]:
        """Scores of many configurations, in order, ``workers`` at a time."""
        thunks = [lambda c=tuple(c): self.outputs(c) for c in configs]
        bar = tqdm(total=len(thunks), desc=desc, unit="config", disable=not progress, leave=False)
        try:
            return self.score_thunks(thunks, bar)
        finally:
            bar.close()

    def score_thunks(self, thunks: Sequence[Callable[[], Outputs]], bar: tqdm | None = None) -> list[Score]:
        """Scores of the outputs each thunk computes, in order, ``workers`` at a time."""
        out: list[Score | None] = [None] * len(thunks)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(lambda t=t: self.score_outputs(t())): k for k, t in enumerate(thunks)}
            for fut in as_completed(futures):
                out[futures[fut]] = fut.result()
                with self._lock:
                    self.evaluations += 1
                if bar is not None:
                    bar.update(1)
        return out  # type: ignore[return-value]

    def segment_runner(self, segments: int, memory_mb: float) -> SegmentRunner | None:
        """Sessions for the model cut into ``segments``, or None when caching two states of every sample
        at a cut would exceed ``memory_mb`` (or there is nothing to cut)."""
        if segments <= 1 or len(self.units) < 2:
            return None
        runner = SegmentRunner(self.gated, segments, exact=self.exact, threads=self.threads)
        need = 2 * len(self.feeds) * live_bytes(runner, self.feeds[0]) / 2**20
        if need > memory_mb:
            log.info("sensitivity: caching prefixes needs ~%.0f MB (> %.0f MB): whole-model runs", need, memory_mb)
            return None
        return runner


def quant_form(model: onnx.ModelProto, plan: QuantPlan, params: dict[str, QuantParams], config: QuantConfig,
               calibration: Iterable[Feed] | None) -> QuantForm:
    """How :func:`onnxq.api.quantize` writes ``model`` under ``config``: int8 or float -> Q -> DQ weights,
    and the bias-corrected float model (one float pass over the calibration data) when that is on."""
    corrected = None
    if config.weights.bias_correction and calibration is not None:
        corrected = bias_corrected(model, plan, params, calibration)
    return QuantForm(prequantized_weights(config), corrected)


def _bind_metric(metric: Metric | None, reference: Outputs) -> tuple[Callable[[Outputs], float] | None, float | None]:
    """A one-argument scorer and the float model's score, from either metric form."""
    if metric is None:
        return None, None
    if _positional_arity(metric) >= 2:
        def scorer(outs: Outputs) -> float:
            return float(metric(reference, outs)[1])

        return scorer, float(metric(reference, reference)[0])

    def single(outs: Outputs) -> float:
        return float(metric(outs))

    return single, single(reference)


def _positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def sensitivity(
    model: onnx.ModelProto,
    plan: QuantPlan,
    params: dict[str, QuantParams],
    feeds: Sequence[Feed],
    options: SensitivityOptions | None = None,
    *,
    metric: Metric | None = None,
    form: QuantForm | None = None,
    progress: bool = False,
) -> tuple[SensitivityReport, GatedEvaluator]:
    """Rank the plan's quantized nodes of the preprocessed float ``model`` by their effect on the outputs.

    ``form``: how the model will be written (:func:`quant_form`), so each configuration computes what
    the written model would. Returns the report and the evaluator (reusable).
    """
    options = options or SensitivityOptions()
    t0 = time.perf_counter()
    gated = build_gated(model, plan, params, form=form)
    evaluator = GatedEvaluator(gated, feeds, metric=metric, workers=options.workers, exact=options.exact)
    t1 = time.perf_counter()
    report = rank(evaluator, _op_types(model), options, progress=progress)
    timings = {"build": round(t1 - t0, 3), "evaluate": round(time.perf_counter() - t1, 3)}
    return dataclasses.replace(report, seconds=round(time.perf_counter() - t0, 3), timings=timings), evaluator


def rank(evaluator: GatedEvaluator, op_types: dict[str, str], options: SensitivityOptions | None = None, *,
         progress: bool = False) -> SensitivityReport:
    """Run the one-at-a-time and/or leave-one-out experiments on ``evaluator`` and rank its units."""
    options = options or SensitivityOptions()
    mode = options.mode
    units = list(evaluator.units)
    use_metric = evaluator.metric is not None
    t = time.perf_counter()
    scores = _experiments(evaluator, options, progress)
    full = scores[0]
    rest = iter(scores[1:])
    only = [next(rest) for _ in units] if mode in ("both", "one") else [None] * len(units)
    loo = [next(rest) for _ in units] if mode in ("both", "loo") else [None] * len(units)
    reference = evaluator.float_metric if use_metric else None
    base = full.measure(use_metric)
    layers = []
    for k, u in enumerate(units):
        gain = loo[k].measure(use_metric) - base if loo[k] is not None else None
        sqnr_gain = loo[k].sqnr_db - full.sqnr_db if loo[k] is not None else None
        loss = None
        if only[k] is not None:
            loss = (reference - only[k].metric) if use_metric else -only[k].sqnr_db
        layers.append(LayerSensitivity(u, op_types.get(u, "?"), k, only[k], loo[k], gain, sqnr_gain, loss))
    layers.sort(key=_rank_key)
    return SensitivityReport(
        measure="metric" if use_metric else "sqnr_db", samples=len(evaluator.feeds), float_metric=reference,
        all_quantized=full, layers=tuple(layers), evaluations=len(scores),
        seconds=round(time.perf_counter() - t, 3), workers=evaluator.workers, exact=evaluator.exact,
    )


def _experiments(evaluator: GatedEvaluator, options: SensitivityOptions, progress: bool) -> list[Score]:
    """Scores of: all quantized, then each unit alone (mode one/both), then all but each (loo/both)."""
    units = list(evaluator.units)
    one = options.mode in ("both", "one")
    loo = options.mode in ("both", "loo")
    configs = [tuple(units)] + ([(u,) for u in units] if one else [])
    configs += [tuple(v for v in units if v != u) for u in units] if loo else []
    runner = evaluator.segment_runner(options.segments, options.memory_mb)
    if runner is None:
        return evaluator.scores(configs, progress=progress)
    jobs = [(runner.segment_of(k), "float", (u,)) for k, u in enumerate(units)] if one else []
    jobs += [(runner.segment_of(k), "quant", c) for k, c in enumerate(configs[1 + len(jobs):])]
    bar = tqdm(total=len(configs), desc="sensitivity", unit="config", disable=not progress, leave=False)
    try:
        _, quantized, scores = run_from_cuts(runner, evaluator.feeds, jobs,
                                             lambda thunks: evaluator.score_thunks(thunks, bar))
        full = evaluator.score_thunks([lambda: quantized], bar)[0]
    finally:
        bar.close()
    return [full] + scores


def _rank_key(s: LayerSensitivity) -> tuple[float, float, float]:
    """Most sensitive first: by gain, then SQNR gain (a metric over few samples often ties), then loss."""
    def neg(v: float | None) -> float:
        return -v if v is not None else 0.0

    return neg(s.gain), neg(s.sqnr_gain), neg(s.loss)


def _op_types(model: onnx.ModelProto) -> dict[str, str]:
    return {n.name: n.op_type for n in all_nodes(model.graph)}  # units inside bodies too
