"""Orchestration only: ``quantize`` wires load -> preprocess -> plan -> collect -> solve -> rewrite -> check."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import onnx

from onnxq import __version__, io, runtime
from onnxq.analysis.activation_means import channel_maxima, correction_nodes, moment_reducers
from onnxq.analysis.auto import (
    FALLBACK_MIN_STEP_DB,
    MIN_FALLBACK_FEEDS,
    choose,
    not_poor_metric,
    poor_outputs,
)
from onnxq.analysis.heldout import split_feeds
from onnxq.analysis.metrics import output_similarity
from onnxq.calibrate.bias_correction import merge_moments
from onnxq.calibrate.choose import candidate_configs
from onnxq.calibrate.solve import solve, weight_qmax
from onnxq.check import check_input_model, check_model, save_model, validation_problem
from onnxq.collect import data as data_mod
from onnxq.collect.batching import select
from onnxq.collect.collectors import collect, collect_all
from onnxq.collect.feeds import batch_size
from onnxq.collect.passes import Reference
from onnxq.collect.stats import TensorStats, merge_stats
from onnxq.config import FallbackRule, Method, Mode, QuantConfig, Target, exclusion_problems
from onnxq.errors import ConfigError, InternalError, SessionLoadError, UnsupportedModelError, ValidationError
from onnxq.graph.annotations import annotated, keep_annotations
from onnxq.graph.existing import existing_quantization
from onnxq.graph.query import GraphIndex, import_graph
from onnxq.graph.scopes import all_nodes
from onnxq.graph.size import fits_protobuf
from onnxq.graph.usage import all_nodes as all_proto_nodes
from onnxq.placement import plan
from onnxq.placement.unrun import drop_unrun
from onnxq.preprocess import preprocess
from onnxq.preprocess.names import name_nodes
from onnxq.records import MethodChoice, QuantParams, QuantPlan, QuantReport, TensorRecord
from onnxq.rewrite.bias_correction import apply_bias_shifts, output_shifts
from onnxq.rewrite.equalize import depthwise_inputs, equalize, shared_scale_loss_bits
from onnxq.rewrite.gates import prequantized_weights
from onnxq.rewrite.insert_qdq import export_model, insert_into, insert_qdq
from onnxq.rewrite.recurrent import insert_recurrent

log = logging.getLogger(__name__)

DataArg = data_mod.DataSource | str | os.PathLike | Iterable[dict[str, np.ndarray]] | None


@dataclass(frozen=True)
class QuantResult:
    """A quantized model in memory with its report; ``save`` validates and writes it atomically.

    Frozen like every record onnxq returns: a caller that changes what it says (the model name in the
    report, the source path) makes a new one with ``dataclasses.replace``.
    """

    model: onnx.ModelProto
    report: QuantReport
    plan: QuantPlan
    params: dict[str, QuantParams]
    stats: dict[str, TensorStats] = field(repr=False, default_factory=dict)
    sample: dict[str, np.ndarray] | None = field(repr=False, default=None)
    source: str | None = None
    checked: bytes | None = field(repr=False, default=None)  # the model's bytes as quantize checked them

    def save(self, path: str | os.PathLike) -> Path:
        return save_model(self.model, path, feed=self.sample, source=self.source, checked=self.checked)


def prepare(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Load and preprocess a float model (opset >= 13, shapes inferred, BN folded, nodes named); a model that
    is already quantized is refused (UnsupportedModelError)."""
    pre, notes, _ = _prepare(model)
    return pre, notes


def _prepare(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], frozenset[str]]:
    """:func:`prepare`, and the tensors the model as given annotates (value_info): what the written model
    keeps (graph.annotations: the shapes onnxq infers for itself steer onnxruntime into slower fusions)."""
    loaded = io.load_model(model)
    require_float(loaded)
    given = annotated(loaded)
    pre, notes = preprocess(loaded)
    pre, renamed = name_nodes(pre)
    if renamed:
        notes.append(f"named {renamed} unnamed nodes")
    return pre, notes, given


def require_float(model: onnx.ModelProto) -> None:
    """Refuse a model that already carries quantization: planning it again would stack Q/DQ on Q/DQ."""
    found = existing_quantization(model)
    if found is not None:
        raise UnsupportedModelError(
            f"the model is already quantized ({found.summary()}); onnxq quantizes float models: give the float "
            "model this one was made from (onnxq inspect shows the quantization this one carries)")


@contextmanager
def onnxq_graphs(model: str | os.PathLike | onnx.ModelProto) -> Iterator[None]:
    """Inside: onnxruntime refusing a graph onnxq built from ``model`` (preprocessed, equalized, exposed
    for calibration, gated) is an InternalError (exit 1, "report it") when ``model`` as given loads.

    Why: every session onnxq opens while quantizing is on such a graph, and runtime blames the model it
    is given. When the model as given loads, blaming it (exit 2) sends the user to fix a model that is
    not broken; the fault is onnxq's. When it fails too (a kernel onnxruntime lacks, say), the error is
    the user's and stands. The check costs one session, only on the failure path.
    """
    try:
        yield
    except SessionLoadError as exc:
        given = model if isinstance(model, onnx.ModelProto) else io.load_model(model)
        if runtime.load_problem(given) is not None:
            raise
        detail = str(exc).removeprefix("onnxruntime cannot load the model: ")
        raise InternalError(
            f"internal error: onnxruntime cannot load the graph onnxq built from the model (after "
            f"preprocessing, equalization or gating) although it loads the model as given: {detail}; this is "
            "an onnxq bug, please report it"
        ) from exc


_Run = TypeVar("_Run", bound=Callable[..., Any])


def _onnxq_graphs(run: _Run) -> _Run:
    """:func:`onnxq_graphs` around ``run``, whose first argument is the user's model."""
    @functools.wraps(run)
    def wrapper(model: str | os.PathLike | onnx.ModelProto, *args: Any, **kwargs: Any) -> Any:
        with onnxq_graphs(model):
            return run(model, *args, **kwargs)
    return cast(_Run, wrapper)


def as_source(data: DataArg, model: onnx.ModelProto, batch_size: int | None = None) -> data_mod.DataSource:
    specs = data_mod.input_specs_from_model(model)
    if data is None:
        raise data_mod.CalibrationDataError("no calibration data given: pass a folder, a DataSource or an iterable")
    if isinstance(data, data_mod.DataSource):
        source = data
    elif isinstance(data, (str, os.PathLike)):
        source = data_mod.from_dir(data, specs)  # images need explicit preprocessing: use from_images
    else:
        source = data_mod.from_iterable(data)
    # With batching, the collector validates whole batches instead (a fixed batch N > 1 rejects single samples).
    return source if batch_size is not None and batch_size > 1 else data_mod.validated(source, specs)


@dataclass(frozen=True)
class _Measured:
    """What the pass(es) over the data measured: statistics, and the bias-correction moments when asked."""

    stats: dict[str, TensorStats]
    samples: int  # data samples seen (0 when only given statistics were used)
    moments: dict[str, Any]
    runs: str = ""
    moments_seconds: float = 0.0  # of a pass that measured only the moments (statistics were given)
    references: tuple[Reference, ...] = ()  # the float outputs of a feed the collection ran (for the check)


def _measure(pre: onnx.ModelProto, index: GraphIndex, qplan: QuantPlan, source: data_mod.DataSource | None,
             config: QuantConfig, stats: dict[str, TensorStats] | None, progress: bool,
             histograms: bool | None, notes: list[str]) -> _Measured:
    """Statistics (collected, or ``stats`` as given) and the input moments bias correction needs.

    Both come from one run of the model over the data; with statistics given, the moments need a pass of
    their own (nothing else is collected in it), and without data bias correction is skipped.
    """
    nodes = correction_nodes(index, qplan) if config.weights.bias_correction else []
    reducers = moment_reducers(nodes)
    if stats is None:
        if source is None:
            raise data_mod.CalibrationDataError("give calibration data or precomputed statistics (--load-stats)")
        run = collect_all(pre, qplan, source, config, reducers=reducers, progress=progress, histograms=histograms)
        return _Measured(run.stats, run.samples, run.reduced, run.describe(config.batch_size),
                         references=(run.reference,) if run.reference is not None else ())
    if not reducers:
        return _Measured(stats, 0, {})
    if source is None:
        notes.append("bias correction skipped: it needs the calibration data, not only statistics")
        return _Measured(stats, 0, {})
    t = time.perf_counter()
    run = collect_all(pre, QuantPlan(qplan.target, (), (), ()), source, config, reducers=reducers)
    return _Measured(stats, run.samples, run.reduced, moments_seconds=time.perf_counter() - t)


@_onnxq_graphs
def quantize(
    model: str | os.PathLike | onnx.ModelProto,
    data: DataArg,
    config: QuantConfig | None = None,
    *,
    stats: dict[str, TensorStats] | None = None,
    progress: bool = False,
    histograms: bool | None = None,
    max_float_layers: int | None = None,
    metric: Callable[[Any, Any], tuple[float, float]] | None = None,
) -> QuantResult:
    """Quantize ``model`` with calibration ``data`` (or precomputed ``stats``) under ``config``.

    ``histograms``: keep histograms in ``result.stats`` even when the method needs none (True), so the
    statistics can be saved and solved with any method later (default: as the method needs).

    With ``--method auto`` (the default), when the held-out result is poor (:func:`poor_outputs`), the
    layers that lose it are left in float until it is not, at most ``max_float_layers`` of them (None: 10 %
    of the Conv/Gemm/MatMul layers; 0: never): ``report.fallback`` says which and what each bought.

    ``metric`` (``metric(outputs_float, outputs_quant) -> (float_score, quant_score)``, outputs per feed,
    higher is better; ``onnxq.cli.scripts.pair_metric`` makes it from the one-argument form): auto scores
    its candidates by it on the held-out feeds instead of the worst output slice.
    """
    config = config or QuantConfig()
    if config.mode is Mode.DYNAMIC:  # no calibration: onnxq.dynamic
        from onnxq.dynamic import quantize_dynamic
        return quantize_dynamic(model, config, data)
    result = _quantize(model, data, config, stats=stats, progress=progress, histograms=histograms, metric=metric)
    choice = result.report.choice
    poor = poor_outputs(choice) if choice is not None else []
    if not poor:
        return result
    if max_float_layers == 0 or not choice.held_out or data is None or choice.feeds < MIN_FALLBACK_FEEDS:
        few = (f" (too few held-out feeds to choose layers on: give {5 * MIN_FALLBACK_FEEDS} or more calibration "
               "feeds)") if choice.held_out and choice.feeds < MIN_FALLBACK_FEEDS and max_float_layers != 0 else ""
        log.warning("the quantized model is far from float on %s: %s; onnxq compare --per-layer shows the layers "
                    "that lose it, and --auto-fallback keeps the worst in float%s", choice.scoring, "; ".join(poor),
                    few)
        return result
    log.warning("the quantized model is far from float on %s: %s; leaving the layers that lose it in float "
                "(at most %s; --max-float-layers 0 keeps every layer quantized)", choice.scoring, "; ".join(poor),
                max_float_layers if max_float_layers is not None else "10 % of the weighted layers")
    return _fallback_when_poor(model, data, config, result, max_float_layers, progress)


def _fallback_when_poor(model: str | os.PathLike | onnx.ModelProto, data: DataArg, config: QuantConfig,
                        result: QuantResult, max_float_layers: int | None, progress: bool) -> QuantResult:
    """:func:`quantize_with_fallback` from ``result`` (its choice and statistics), judged on the held-out
    feeds by the measure that called the result poor, stopping as soon as it is not."""
    choice = result.report.choice
    written = result.model  # the float model's inputs and outputs, without preprocessing it again
    scoring = _scoring_feeds(as_source(data, written, config.batch_size), False)
    rule = FallbackRule(max_float_layers=max_float_layers, max_metric_drop=0.0, min_step_gain=FALLBACK_MIN_STEP_DB)
    metric = not_poor_metric([o.name for o in written.graph.output])
    fixed, fallback, ranking = quantize_with_fallback(model, data, config, rule, eval_data=scoring.feeds, metric=metric,
                                                      stats=result.stats, progress=progress, choice=choice)
    report = dataclasses.replace(fixed.report, fallback=fallback)
    if fallback.verified_met:
        log.warning("kept %d layers in float (%s): the held-out result is clear of poor",
                    len(fallback.float_nodes), ", ".join(fallback.float_nodes))
    else:
        left = [s.node for s in (ranking.layers if ranking is not None else ())
                if s.node not in fallback.float_nodes][:5]
        log.warning("still far from float after keeping %d layers in float (%s; the next best would win back "
                    "less than %g dB, or the cap is reached)%s; raise --max-float-layers, exclude layers yourself "
                    "(--exclude-node), or check the data (onnxq sensitivity ranks every layer)",
                    len(fallback.float_nodes), ", ".join(fallback.float_nodes) or "none", FALLBACK_MIN_STEP_DB,
                    f"; the next layers to blame: {', '.join(left)}" if left else "")
    return dataclasses.replace(fixed, report=report)


def _quantize(
    model: str | os.PathLike | onnx.ModelProto,
    data: DataArg,
    config: QuantConfig,
    *,
    stats: dict[str, TensorStats] | None,
    progress: bool,
    histograms: bool | None,
    metric: Callable[..., Any] | None = None,
) -> QuantResult:
    """One quantization pass (the method search of ``auto`` included, the fallback not).

    The preprocessed model is imported into one graph: the plan reads it, bias correction and the Q/DQ
    rewrite change it in place, and it is exported once. The float model (``pre``) stays as it is for the
    sessions that run it (calibration, the final comparison).
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    pre, notes, given = _prepare(model)
    _require_quantizable(pre)
    _require_valid(pre, model)
    check_exclusions(pre, config)
    source = as_source(data, pre, config.batch_size) if data is not None else None
    auto = config.activations.method is Method.AUTO
    scoring = _scoring_feeds(source, stats is not None) if auto else None
    reference = pre  # the float model: every variant computes the same function
    t_eq = time.perf_counter()
    options = _equalize_options(pre, config, auto, scoring, stats, notes)
    eq_seconds = time.perf_counter() - t_eq
    variants = []
    for eq in options:
        t_eq = time.perf_counter()
        variants.append(_variant(pre, config, source, notes, eq))
        eq_seconds += (time.perf_counter() - t_eq) if eq else 0.0
    # deciding on and building the equalized variant runs the model over the data: its own figure
    timings["prepare"] = time.perf_counter() - t - eq_seconds
    if any(options) or eq_seconds >= 0.01:
        timings["equalize"] = eq_seconds
    t = time.perf_counter()
    runs = [_measure(v.pre, v.index, v.plan, scoring.estimate if scoring else source, config, stats, progress,
                     histograms, v.notes) for v in variants]
    variants = [_observed(v, m.stats) for v, m in zip(variants, runs)]
    measured = {id(v): m for v, m in zip(variants, runs)}
    measured_first = dict(measured)
    moments_s = sum(m.moments_seconds for m in measured.values())
    timings["calibrate"] = time.perf_counter() - t - moments_s
    if moments_s:
        timings["bias_correction"] = moments_s
    t = time.perf_counter()
    dq_only = prequantized_weights(config)
    methods = _candidates(config, measured[id(variants[0])].stats) if auto else [(None, config)]
    candidates = [(v, name, cfg, solve(measured[id(v)].stats, v.plan, cfg)) for v in variants for name, cfg in methods]
    choice, chosen = None, candidates[0]
    if len(candidates) > 1 and scoring is not None and scoring.feeds:
        shifts = {id(v): output_shifts(v.index, v.plan, next(c[3] for c in candidates if c[0] is v),
                                       measured[id(v)].moments) for v in variants}  # weights only: any method

        def build(v: _Variant, p: dict[str, QuantParams]) -> Callable[[], onnx.ModelProto]:
            def write() -> onnx.ModelProto:
                copy = v.graph.copy()
                _rewrite(copy, v.plan, p, shifts[id(v)], config, dq_only)
                return export_model(copy, v.pre)
            return write

        k, choice = choose([(v.label(name), build(v, p)) for v, name, _, p in candidates], reference,
                           scoring.feeds, scoring.description, scoring.held_out,
                           metric=metric)
        chosen = candidates[k]
        choice = dataclasses.replace(choice, method=chosen[1], equalized=chosen[0].equalized)
        timings["choose"] = time.perf_counter() - t
        if scoring.held_out:  # the chosen method's final ranges come from every feed, held-out ones included
            t = time.perf_counter()
            v = chosen[0]
            rest = _measure(v.pre, v.index, v.plan, scoring.scored, config, None, False, histograms, v.notes)
            measured[id(v)] = _merged(measured[id(v)], rest)
            timings["calibrate"] += time.perf_counter() - t
    elif auto:
        k = _blind_choice([cfg.activations.method for _, _, cfg, _ in candidates])
        chosen = candidates[k]
        choice = MethodChoice(chosen[1], (), "", False, reason=_blind_reason(candidates), method=chosen[1],
                              equalized=chosen[0].equalized)
    t = time.perf_counter()
    v, _, chosen_config, params = chosen
    pre, graph, index, qplan, notes = v.pre, v.graph, v.index, v.plan, v.notes
    final = measured[id(v)]
    if final is not measured_first[id(v)]:  # held-out statistics joined: solve again on every feed
        params = solve(final.stats, qplan, chosen_config)
    _rewrite(graph, qplan, params, output_shifts(index, qplan, params, final.moments), config, dq_only)
    qmodel = export_model(graph, pre)
    # onnxq's inferred shapes would steer onnxruntime's optimizer into slower fusions (graph.annotations:
    # an ort-cpu MiniLM ran 8.7 ms with them, 7.2 ms without): the model keeps the annotations it came with
    keep_annotations(qmodel, given)
    _stamp(qmodel, config)
    timings["rewrite"] = time.perf_counter() - t
    t = time.perf_counter()
    sample = _first_sample(source, pre) if source is not None else None
    try:
        checked = check_model(qmodel, sample)  # its bytes let save() skip the check for the same model
    except ValidationError:
        check_input_model(pre, sample)  # an invalid float model is the input's fault, not an onnxq bug
        raise
    check = output_similarity(_float_outputs(pre, sample, final.references), checked.outputs) \
        if sample is not None else {}
    timings["check"] = time.perf_counter() - t
    report = QuantReport(
        model=str(model) if not isinstance(model, onnx.ModelProto) else "<in-memory model>",
        target=config.target.value,
        method=config.activations.method.value if choice is None else f"auto: {choice.chosen}",
        config=config.to_dict(),
        preprocess=tuple(notes),
        data=_data_description(source, data_used=stats is None),
        samples=final.samples,
        feeds=source.count if source is not None and final.samples else None,
        quantized_nodes=qplan.quantized_nodes,
        skipped=qplan.skips,
        tensors=tuple(_records(qplan, params)),
        timings={k: round(v, 3) for k, v in timings.items()},
        check=check,
        check_samples=batch_size(sample) if sample is not None else 0,
        runs=final.runs,
        choice=choice,
    )
    src = None if isinstance(model, onnx.ModelProto) else str(model)
    return QuantResult(qmodel, report, qplan, params, final.stats, sample, src, checked.data)


def _rewrite(graph: Any, qplan: QuantPlan, params: dict[str, QuantParams], shifts: dict[str, np.ndarray],
             config: QuantConfig, dq_only: bool) -> None:
    """The rewrite of ``graph`` in place, the same for auto's candidates and the model written: bias shifts,
    Q/DQ, recurrent kernels."""
    apply_bias_shifts(graph, shifts, qplan)
    insert_into(graph, qplan, params, dq_only=dq_only)
    insert_recurrent(graph, qplan.quantized_nodes, config.weights, int(weight_qmax(config)))


@dataclass(frozen=True)
class _Scoring:
    """How ``auto`` splits the calibration data: feeds for range estimation, feeds that score candidates."""

    estimate: data_mod.DataSource | None
    feeds: list[dict[str, np.ndarray]]
    description: str
    held_out: bool
    scored: data_mod.DataSource | None = None  # the held-out feeds as a source (their statistics join at the end)


IN_SAMPLE_FEEDS = 16  # feeds scored when none can be held out


def _scoring_feeds(source: data_mod.DataSource | None, stats_given: bool) -> _Scoring | None:
    """The held-out split of ``source`` (see analysis.heldout.split_feeds).

    Scored in-sample instead (the report says so) when the statistics were given (they saw every feed)
    or when the source does not know its length (a load_data() script): splitting it would mean running
    the user's loader once more just to count.
    """
    if source is None:
        return None
    if source.count is None:
        feeds = list(itertools.islice(source, IN_SAMPLE_FEEDS))
        return _Scoring(source, feeds, f"the first {len(feeds)} calibration feeds (in-sample: the source does "
                        "not say how many feeds it holds)", False)
    split = split_feeds(source.count)
    scored = select(source, split.scoring, f"{len(split.scoring)} held out")
    feeds = list(scored)
    if stats_given:
        return _Scoring(source, feeds, f"{len(feeds)} calibration feeds (in-sample: statistics given)", False)
    if not split.held_out:
        return _Scoring(source, feeds, split.describe(), False)
    estimate = select(source, split.estimation, f"{len(split.estimation)} for range estimation")
    return _Scoring(estimate, feeds, split.describe(), True, scored)


@dataclass(frozen=True)
class _Variant:
    """One float graph auto may quantize: the preprocessed model as is, or with its depthwise inputs
    equalized. Each has its own graph, plan and statistics (equalizing adds tensors)."""

    equalized: bool
    pre: onnx.ModelProto
    graph: Any  # gs.Graph
    index: GraphIndex
    plan: QuantPlan
    notes: list[str]

    def label(self, method: str | None) -> str:
        return f"{method} + equalize" if self.equalized else str(method)


def _variant(pre: onnx.ModelProto, config: QuantConfig, source: data_mod.DataSource | None, notes: list[str],
             equalize: bool) -> _Variant:
    """The variant of ``pre``: equalized (channel maxima from all of ``source``, as an explicit ``--equalize
    on`` and the fallback measure them, so that statistics collected on it fit theirs) or not, imported
    once, planned."""
    own = list(notes)
    model = equalized(pre, dataclasses.replace(config, equalize=equalize), source, own)
    graph = import_graph(model)
    index = GraphIndex.build(graph)
    return _Variant(equalize and model is not pre, model, graph, index, plan(index, config), own)


EQUALIZE_MIN_BITS = 1.0  # auto tries the equalized variant when a shared scale costs the inputs this much


def _observed(v: _Variant, stats: dict[str, TensorStats]) -> _Variant:
    """``v`` with the nodes whose planned input the data never reached (an If branch not taken) in float:
    such a tensor has no range to quantize with (placement.unrun)."""
    counts = {t: s.count for t, s in stats.items()}
    if all(counts.values()):
        return v
    plan_ = drop_unrun(v.plan, counts, {name: node.op for name, node in all_nodes(v.graph).items()})
    return dataclasses.replace(v, plan=plan_)


def _equalize_options(pre: onnx.ModelProto, config: QuantConfig, auto: bool, scoring: _Scoring | None,
                      stats: dict[str, TensorStats] | None, notes: list[str]) -> list[bool]:
    """Which variants to quantize: as the config says, or for auto (equalize not set, TensorRT target, data
    to score on, statistics not given) both, when one per-tensor scale costs the quantized depthwise
    inputs' typical channel at least EQUALIZE_MIN_BITS (``shared_scale_loss_bits``: measured 0.4 on
    EfficientNet-Lite0, whose equalized variant never won, 1.2 to 1.8 on PP-OCR cls/det and YOLOX-Nano,
    where it did). Below that, equalization cannot win back enough to be worth a second collection and its
    candidates. The spread is a property of the network, so the scoring feeds (at most 32, in memory) tell
    it; the equalized variant itself measures its maxima on all the feeds, as ``--equalize on`` does.
    """
    if config.equalize is not None or not auto:
        return [bool(config.equalize) and config.target is Target.TENSORRT]
    if config.target is not Target.TENSORRT or scoring is None or not scoring.feeds or stats is not None:
        return [False]
    inputs = _quantized_depthwise_inputs(pre, config)
    if not inputs:
        return [False]
    maxima = channel_maxima(pre, [i.tensor for i in inputs], data_mod.from_iterable(scoring.feeds), config)
    loss = shared_scale_loss_bits(maxima)
    if loss < EQUALIZE_MIN_BITS:
        notes.append(f"equalization not tried: one scale costs the {len(inputs)} depthwise conv inputs "
                     f"{loss:.2f} bits per channel (median), under {EQUALIZE_MIN_BITS:g}")
        return [False]
    return [False, True]


def _merged(a: _Measured, b: _Measured) -> _Measured:
    """One measurement of the feeds of ``a`` and ``b`` (disjoint): histograms on the anchored grid merge
    exactly, so the ranges are those one collection over all the feeds gives."""
    stats = {t: merge_stats(s, b.stats[t]) if t in b.stats else s for t, s in a.stats.items()}  # (b: not-run dropped)
    moments = {n: merge_moments(m, b.moments[n]) if n in b.moments else m for n, m in a.moments.items()}
    return _Measured(stats, a.samples + b.samples, moments, a.runs, a.moments_seconds + b.moments_seconds,
                     a.references + b.references)


def _candidates(config: QuantConfig, stats: dict[str, TensorStats]) -> list[tuple[str, QuantConfig]]:
    """The methods auto tries: all of them when every tensor has a histogram, else minmax only."""
    options = candidate_configs(config)
    if all(s.has_histogram for s in stats.values()):
        return options
    return [(name, cfg) for name, cfg in options if cfg.activations.method is Method.MINMAX]


_BLIND = (Method.MSE, Method.MINMAX)  # without samples to score: mse (the MSE-optimal range per tensor)


def _blind_choice(methods: list[Method]) -> int:
    """Index in ``methods`` of the method to keep when no samples can score them."""
    return next((methods.index(m) for m in _BLIND if m in methods), 0)


def _blind_reason(candidates: list) -> str:
    if len(candidates) == 1:
        return "the statistics have no histograms: minmax is the only method they allow"
    return "no calibration data to score the candidates (statistics given without data)"


def resolve_method(pre: onnx.ModelProto, qplan: QuantPlan, stats: dict[str, TensorStats], config: QuantConfig,
                   source: data_mod.DataSource | None) -> tuple[QuantConfig, MethodChoice | None]:
    """``config`` with one activation method: itself unless ``auto``; for ``auto``, every candidate is solved
    from ``stats`` and scored on the split's scoring feeds of ``source`` (in-sample: the statistics saw
    them), without bias correction. For analyses (sensitivity, fallback) that need the method
    ``quantize`` would choose before they solve; ``quantize`` itself scores on held-out feeds."""
    if config.activations.method is not Method.AUTO:
        return config, None
    candidates = [(name, cfg, solve(stats, qplan, cfg)) for name, cfg in _candidates(config, stats)]
    scoring = _scoring_feeds(source, stats_given=True) if source is not None else None
    if len(candidates) > 1 and scoring is not None and scoring.feeds:
        dq_only = prequantized_weights(config)
        k, choice = choose([(name, functools.partial(insert_qdq, pre, qplan, p, dq_only=dq_only))
                            for name, _, p in candidates], pre, scoring.feeds, scoring.description, False)
    else:
        k = _blind_choice([cfg.activations.method for _, cfg, _ in candidates])
        choice = MethodChoice(candidates[k][0], (), "", False, reason=_blind_reason(candidates),
                              method=candidates[k][0], equalized=False)
    return candidates[k][1], choice


def _data_description(source: data_mod.DataSource | None, data_used: bool) -> str:
    if source is None:
        return "precomputed statistics"
    return source.description if data_used else f"{source.description}, for bias correction (statistics given)"


def check_exclusions(model: onnx.ModelProto, config: QuantConfig, *, warn: bool = True) -> None:
    """ConfigError for an excluded op type mistyped in case (``conv``); with ``warn``, a logged warning per
    exclusion that matches nothing in the preprocessed ``model`` (see config.exclusion_problems)."""
    nodes = all_proto_nodes(model.graph)  # placement applies the exclusions in subgraph bodies too
    ops = {n.op_type for n in nodes}
    known = ops | {schema.name for schema in onnx.defs.get_all_schemas()}
    errors, warnings = exclusion_problems(config, [n.name for n in nodes], ops, known)
    if errors:
        raise ConfigError(errors[0])
    for line in warnings if warn else ():
        log.warning("%s", line)


_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})


def _quantized_depthwise_inputs(pre: onnx.ModelProto, config: QuantConfig) -> list:
    """The depthwise-conv inputs of ``pre`` that the plan quantizes: what equalization can act on."""
    wanted = {node for spec in plan(pre, config).activations() for node, idx in spec.consumers if idx == 0}
    return depthwise_inputs(pre, wanted)


def equalized(pre: onnx.ModelProto, config: QuantConfig, source: data_mod.DataSource | None,
              notes: list[str] | None = None) -> onnx.ModelProto:
    """``pre`` with its quantized depthwise inputs equalized when ``config.equalize`` (else ``pre``).

    The per-channel maxima come from one pass over ``source`` (all of it: see onnxq.rewrite.equalize); the
    scales only decide how evenly the channels share the int8 range (the float function is unchanged).
    """
    if not config.equalize or config.target is not Target.TENSORRT:
        return pre
    if source is None:
        raise ConfigError("equalize needs calibration data to measure channel ranges; pass it with the "
                          "statistics, or turn equalize off")
    inputs = _quantized_depthwise_inputs(pre, config)
    if not inputs:
        return pre
    maxima = channel_maxima(pre, [i.tensor for i in inputs], source, config)
    out = equalize(pre, inputs, maxima)
    if notes is not None:
        notes.append(f"equalized the channel ranges of {len(inputs)} depthwise conv inputs")
    return out


def _require_quantizable(model: onnx.ModelProto) -> None:
    """Refuse, before any calibration work, models onnxruntime cannot run or with nothing to quantize."""
    runtime.require_known_ops(model)
    runtime.require_qdq_opset(model)
    g = model.graph
    types = [vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)]
    types += [t.data_type for t in g.initializer]
    constants = [n for n in g.node if n.op_type == "Constant"]
    types += [a.t.data_type for n in constants for a in n.attribute if a.HasField("t")]
    if not _FLOAT_TYPES.intersection(types):
        raise UnsupportedModelError(
            "nothing to quantize: the model has no float tensors (INT8 quantization maps float tensors to "
            "int8); use the model as it is"
        )


def _require_valid(pre: onnx.ModelProto, model: str | os.PathLike | onnx.ModelProto) -> None:
    """Refuse an invalid float model before calibrating: its quantized form could not pass the final check.

    When the preprocessed model fails but the model as given passes, the message says so: either the
    newer opset's checks found a flaw the old one missed, or preprocessing broke it. Models over 2 GB
    are left to the final check (checking them here means writing them to disk).
    """
    if not fits_protobuf(pre):
        return
    problem = validation_problem(pre, None)
    if problem is None:
        return
    check_input_model(io.load_model(model), None)  # raises when the model as given is invalid
    raise UnsupportedModelError(
        f"the model fails validation after onnxq's preprocessing (opset upgrade, folding): {problem}; "
        "re-export the model at opset >= 13, and report it if that does not help"
    )


def _outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return runtime.run(runtime.make_session(model), feed)


def _float_outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray],
                   known: Sequence[Reference]) -> list[np.ndarray]:
    """``model``'s outputs for ``feed``: from the calibration run when it ran this feed, else run now."""
    return next((ref.outputs for ref in known if ref.ran(feed)), None) or _outputs(model, feed)


def _first_sample(source: data_mod.DataSource, model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    for feed in source:
        return feed
    return None


def _stamp(model: onnx.ModelProto, config: QuantConfig) -> None:
    model.producer_name = "onnxq"
    model.producer_version = __version__
    meta = {p.key: p.value for p in model.metadata_props}
    meta["onnxq.version"] = __version__
    meta["onnxq.config"] = json.dumps(config.to_dict(), sort_keys=True)
    del model.metadata_props[:]
    for key in sorted(meta):
        model.metadata_props.add(key=key, value=meta[key])


def _records(qplan: QuantPlan, params: dict[str, QuantParams]) -> list[TensorRecord]:
    out = []
    for spec in qplan.specs:
        p = params[spec.key]
        scale = np.atleast_1d(p.scale)
        out.append(TensorRecord(
            tensor=spec.tensor, role=spec.role.value, dtype=spec.dtype, rule=spec.rule, axis=spec.axis,
            scale=float(scale.max()), channels=int(scale.size), lo=float(p.lo), hi=float(p.hi), group=spec.group,
        ))
    return out


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` collected: statistics any method can solve from, and how the data was run."""

    stats: dict[str, TensorStats]
    samples: int
    plan: QuantPlan
    runs: str = ""  # Collection.describe(): batching and passes, when not one feed per run in one pass


@_onnxq_graphs
def calibrate(
    model: str | os.PathLike | onnx.ModelProto, data: DataArg, config: QuantConfig | None = None,
    *, progress: bool = False,
) -> Calibration:
    """Collect statistics once, with histograms (any method can solve from them later)."""
    config = config or QuantConfig()
    pre, _ = prepare(model)
    _require_quantizable(pre)
    check_exclusions(pre, config)
    source = as_source(data, pre, config.batch_size)
    pre = equalized(pre, config, source)
    qplan = plan(pre, config)
    collected = collect_all(pre, qplan, source, config, progress=progress, histograms=True)
    return Calibration(collected.stats, collected.samples, qplan, collected.describe(config.batch_size))


@_onnxq_graphs
def quantize_with_fallback(
    model: str | os.PathLike | onnx.ModelProto,
    data: DataArg,
    config: QuantConfig | None = None,
    rule: Any = None,
    *,
    eval_data: DataArg = None,
    metric: Any = None,
    options: Any = None,
    stats: dict[str, TensorStats] | None = None,
    progress: bool = False,
    choice: MethodChoice | None = None,
) -> tuple[QuantResult, Any, Any]:
    """Quantize with automatic float fallback: returns (result, FallbackResult, SensitivityReport or None).

    Ranks the quantized layers by sensitivity on ``eval_data`` (default: ``data``; no ranking, None, when
    the fully quantized model already meets the target), leaves the most sensitive in float until
    ``rule`` (an ``onnxq.config.FallbackRule``) holds, then plans and
    rewrites once with them excluded (``config.exclude_nodes`` gains one ``^name$`` pattern each, so the
    recorded config reproduces the model). Statistics are collected once, with histograms (any method can
    then solve from them), and reused; tensors only the final plan quantizes are collected then. The
    written model is evaluated exactly on the same samples: ``FallbackResult.verified``.
    ``metric``: ``metric(outputs) -> float`` or ``metric(outputs_float, outputs_quant) -> (f, q)``.
    """

    from onnxq.analysis.fallback import fallback_skips, run_fallback
    from onnxq.analysis.sensitivity import quant_form

    config = config or QuantConfig()
    rule = rule if rule is not None else FallbackRule()  # FallbackRule() names the missing stopping rule
    if config.activations.method is Method.AUTO:  # the fallback starts from what plain quantize keeps
        if choice is None:  # (``choice``: that of a quantize() already run on ``data``)
            choice = _quantize(model, data, config, stats=stats, progress=progress, histograms=None).report.choice
        config = dataclasses.replace(
            config, activations=dataclasses.replace(config.activations, method=choice.method),
            equalize=choice.equalized if config.equalize is None else config.equalize)
    pre, _ = prepare(model)
    _require_quantizable(pre)
    check_exclusions(pre, config, warn=False)  # before the search; quantize() below warns once
    source = as_source(data, pre, config.batch_size) if data is not None else None
    pre = equalized(pre, config, source)
    qplan = plan(pre, config)
    samples = 0
    timings = {}
    t = time.perf_counter()
    if stats is None:
        if source is None:
            raise data_mod.CalibrationDataError("give calibration data or precomputed statistics (--load-stats)")
        stats, samples = collect(pre, qplan, source, config, progress=progress, histograms=True)
    timings["calibrate"] = time.perf_counter() - t
    params = solve(stats, qplan, config)
    evaluation = eval_data if eval_data is not None else data
    if evaluation is None:
        raise data_mod.CalibrationDataError("automatic fallback needs evaluation data: pass eval_data (--eval-data)")
    eval_source = as_source(evaluation, pre)
    feeds = list(eval_source)
    t = time.perf_counter()
    form = quant_form(pre, qplan, params, config, source)  # what quantize() will write, bias correction included
    chosen, ranking, evaluator = run_fallback(pre, qplan, params, feeds, rule, options, metric=metric, form=form,
                                              progress=progress)
    timings["fallback"] = time.perf_counter() - t
    final = dataclasses.replace(config, exclude_nodes=tuple(config.exclude_nodes) + chosen.exclude_patterns)
    stats = _complete_stats(pre, plan(pre, final), stats, source, final, progress)
    result = quantize(model, source, final, stats=stats, progress=progress)
    timings = {**result.report.timings, **{k: round(v, 3) for k, v in timings.items()}}
    if choice is not None:
        result = dataclasses.replace(result, report=dataclasses.replace(
            result.report, method=f"auto: {choice.chosen}", choice=choice))
    report = dataclasses.replace(
        result.report, samples=samples or result.report.samples, timings=timings,
        data=source.description if samples else result.report.data,
        skipped=fallback_skips(result.report.skipped, chosen))
    result = dataclasses.replace(result, report=report, plan=dataclasses.replace(result.plan, skips=report.skipped))
    verified = evaluator.score_model(result.model)
    met = rule.holds(verified, chosen.float_metric) if rule.has_target else None
    chosen = dataclasses.replace(chosen, verified=verified, verified_met=met, eval_data=eval_source.description,
                                 eval_samples=sum(batch_size(f) for f in feeds))
    return result, chosen, ranking


def _complete_stats(pre: onnx.ModelProto, qplan: QuantPlan, stats: dict[str, TensorStats],
                    source: data_mod.DataSource | None, config: QuantConfig, progress: bool
                    ) -> dict[str, TensorStats]:
    """``stats`` plus those of activations ``qplan`` quantizes and ``stats`` lacks (a plan with exclusions
    can move a residual Add's Q/DQ to its other input)."""

    missing = [s for s in qplan.activations() if s.tensor not in stats]
    if not missing:
        return stats
    if source is None:
        raise data_mod.CalibrationDataError(
            f"the statistics lack tensor {missing[0].tensor!r} that the fallback plan quantizes; "
            "pass the calibration data too")
    extra, _ = collect(pre, dataclasses.replace(qplan, specs=tuple(missing)), source, config,
                       progress=progress, histograms=True)
    return {**stats, **extra}
