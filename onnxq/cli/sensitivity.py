"""onnxq sensitivity: rank the quantized layers by how much each one costs at the model's outputs.

For every quantized node: the error with only that node quantized (one at a time) and the gain of
keeping it alone in float (leave one out), against the float model on the evaluation data. The score is
the worst output's SQNR and cosine, or a user metric (``--metric-script FILE``: a Python file defining
``metric(outputs) -> float``, higher is better, where ``outputs[i]`` is the list of the model's outputs on
evaluation sample i; or ``metric(outputs_float, outputs_quant) -> (float_score, quant_score)`` as for
``onnxq compare``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from onnxq import api, io
from onnxq.analysis.sensitivity import SensitivityOptions, quant_form, sensitivity
from onnxq.calibrate.solve import solve
from onnxq.cli import progress_enabled
from onnxq.cli.common import (
    _has_images,
    add_data_args,
    add_quant_args,
    build_config,
    build_source,
    check_dims_use,
    image_spec,
    integer,
    number,
)
from onnxq.cli.scripts import load_metric_script, pair_metric
from onnxq.collect import data as data_mod
from onnxq.collect.collectors import collect_all
from onnxq.collect.folders import existing_dir
from onnxq.collect.images import from_images
from onnxq.collect.stats_file import load_stats
from onnxq.config import FallbackRule, Method
from onnxq.errors import ConfigError, QualityGateError
from onnxq.graph.usage import all_nodes
from onnxq.placement import plan
from onnxq.placement.unrun import drop_unrun
from onnxq.records import FallbackResult, MethodChoice
from onnxq.report.html import render_html
from onnxq.report.sensitivity_render import sensitivity_json, sensitivity_markdown, sensitivity_text

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("sensitivity", help="rank layers by quantization sensitivity", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="float ONNX model")
    add_data_args(p)
    add_eval_args(p)
    add_quant_args(p)
    p.add_argument("--load-stats", metavar="FILE", help="calibrate from saved statistics instead of running the model")
    p.add_argument("--mode", choices=["both", "one", "loo"], default="both",
                   help="one at a time, leave one out, or both (default)")
    p.add_argument("--top", type=integer(0), default=20, metavar="N",
                   help="layers shown in the text and md tables (default 20; 0 = all); json holds every layer")
    p.add_argument("--format", choices=["text", "md", "json"], default="text", help="output format")
    p.add_argument("--workers", type=integer(1), metavar="N", help="configurations evaluated in parallel (default: CPUs)")
    p.add_argument("--exact", action="store_true",
                   help="unoptimized float kernels: bit-exact fake quantization, about twice slower")
    p.add_argument("--report", metavar="FILE.html", help="also write an HTML report (plan, histograms, ranking)")
    p.set_defaults(run=run)


def add_eval_args(p: argparse.ArgumentParser) -> None:
    """--eval-data DIR / --eval-script FILE / --eval-samples N / --metric-script FILE."""
    g = p.add_argument_group("evaluation data (default: the calibration data)")
    g.add_argument("--eval-data", metavar="DIR", help="folder of .npy/.npz files or images (same preprocessing)")
    g.add_argument("--eval-script", metavar="FILE", help="Python file exposing load_data() yielding feed dicts")
    g.add_argument("--eval-samples", type=integer(1), metavar="N", help="use at most N evaluation samples")
    g.add_argument("--metric-script", metavar="FILE",
                   help="Python file defining metric(outputs) -> float, higher is better, where outputs[i] is the "
                        "list of model outputs on evaluation sample i (or metric(outputs_float, outputs_quant) "
                        "-> (float_score, quant_score) as for onnxq compare)")


def add_fallback_args(p: argparse.ArgumentParser) -> None:
    """Options of ``onnxq quantize`` for automatic float fallback and the HTML report."""
    add_eval_args(p)
    g = p.add_argument_group("automatic float fallback")
    g.add_argument("--auto-fallback", action="store_true",
                   help="leave the most sensitive layers in float until the stopping rule holds")
    g.add_argument("--max-float-layers", type=integer(0), metavar="N",
                   help="at most N layers in float: with --auto-fallback (alone: the N most sensitive; default with "
                        "a target: 10 %%), or what --method auto may leave in float when its result is poor "
                        "(default 10 %% of the weighted layers; 0: none)")
    g.add_argument("--min-sqnr", type=number(), metavar="DB",
                   help="with --auto-fallback: stop when the worst output SQNR reaches DB; without: write nothing "
                        "and exit 1 when an output of --method auto's held-out result is under DB dB SQNR")
    g.add_argument("--max-metric-drop", type=number(0), metavar="X",
                   help="stop when the --metric-script score is within X of the float model's")
    g.add_argument("--fallback-select", choices=["rule", "sqnr"],
                   help="choose each layer by what it buys in the stopping rule's measure (default) or in output "
                        "SQNR (steadier when the metric is coarse, e.g. accuracy on a few hundred samples)")
    g.add_argument("--report", metavar="FILE.html", help="write an HTML report (plan, histograms, per-layer SQNR)")


def fallback_rule(args: argparse.Namespace) -> FallbackRule:
    if args.max_metric_drop is not None and not args.metric_script:
        raise ConfigError("--max-metric-drop needs a metric: pass --metric-script FILE defining metric()")
    return FallbackRule(args.max_float_layers, args.min_sqnr, args.max_metric_drop, args.fallback_select or "rule")


def eval_source(args: argparse.Namespace, specs) -> data_mod.DataSource | None:
    """The evaluation DataSource, or None when no evaluation data was given."""
    if args.eval_data and args.eval_script:
        raise ConfigError("give one evaluation source: --eval-data DIR or --eval-script FILE")
    if args.eval_data:
        folder = existing_dir(args.eval_data, "evaluation data folder")
        source = from_images(folder, specs, image_spec(args)) if _has_images(folder) else data_mod.from_dir(folder, specs)
    elif args.eval_script:
        source = data_mod.from_script(args.eval_script)
    else:
        return None
    if args.eval_samples:
        source = data_mod.take(source, args.eval_samples)
    return source


def sensitivity_inputs(args: argparse.Namespace):
    """(model, config, calibration source, evaluation source, metric) from the command line."""
    config = build_config(args)
    check_dims_use(args)  # also when --load-stats leaves the data unread
    model = io.load_model(args.model)
    specs = data_mod.input_specs_from_model(model)
    calib = None
    if not (args.load_stats and args.calib_data is None and args.calib_script is None and args.random is None):
        calib = build_source(args, specs, seed=config.seed)
    evaluation = eval_source(args, specs)
    if evaluation is None:
        if calib is None:
            raise ConfigError("no evaluation data: pass --eval-data DIR (or --eval-script FILE)")
        log.warning("no --eval-data: evaluating on the calibration data (optimistic); pass --eval-data DIR")
        evaluation = calib
        if args.eval_samples:  # the same source cut once, so the description says "first N" once
            limit = min(n for n in (args.max_samples, args.eval_samples) if n is not None)
            evaluation = build_source(argparse.Namespace(**{**vars(args), "max_samples": limit}), specs,
                                      seed=config.seed)
    metric = load_metric_script(args.metric_script) if args.metric_script else None
    return model, config, calib, evaluation, metric


def run(args: argparse.Namespace) -> int:
    model, config, calib, evaluation, metric = sensitivity_inputs(args)
    with api.onnxq_graphs(model):  # every session below is on a graph onnxq built from the model
        return _analyse(args, model, config, calib, evaluation, metric)


def _analyse(args: argparse.Namespace, model, config, calib, evaluation, metric) -> int:
    progress = progress_enabled(args)
    pre, _ = api.prepare(model)
    api.check_exclusions(pre, config)
    pre = api.equalized(pre, config, api.as_source(calib, pre, config.batch_size) if calib is not None else None)
    qplan = plan(pre, config)
    calib_line = f"statistics from {args.load_stats}"
    if args.load_stats:
        stats, _meta = load_stats(args.load_stats)
    else:
        collected = collect_all(pre, qplan, api.as_source(calib, pre, config.batch_size), config, progress=progress,
                                histograms=True if args.report else None)
        stats, runs = collected.stats, collected.describe(config.batch_size)
        calib_line = f"{calib.description} ({collected.samples} samples)" + (f"; {runs}" if runs else "")
    counts = {t: s.count for t, s in stats.items()}
    if not all(counts.values()):  # as quantize does: a node whose input the data never reached stays float
        qplan = drop_unrun(qplan, counts, {n.name: n.op_type for n in all_nodes(pre.graph)})
    calibration = api.as_source(calib, pre, config.batch_size) if calib is not None else None
    config, _ = api.resolve_method(pre, qplan, stats, config, calibration)
    params = solve(stats, qplan, config)
    feeds = list(api.as_source(evaluation, pre))
    options = SensitivityOptions(mode=args.mode, workers=args.workers, exact=args.exact)
    if calibration is None and config.weights.bias_correction:
        log.warning("bias correction is not applied: it measures means on the calibration data, and only "
                    "--load-stats was given; add --calib-data to analyse the model quantize would write")
    form = quant_form(pre, qplan, params, config, calibration)
    report, _ = sensitivity(pre, qplan, params, feeds, options, metric=metric, form=form, progress=progress)
    report = dataclasses.replace(report, model=str(args.model), data=evaluation.description,
                                 calibration=calib_line)
    if args.report:
        page = render_html(None, qplan, stats=stats, params=params, sensitivity=report, title=str(args.model))
        write_report(page, args.report)
    if not args.quiet:
        render = {"text": sensitivity_text, "md": sensitivity_markdown, "json": sensitivity_json}[args.format]
        print(render(report, args.top))
    return 0


def write_report(page: str, path: str | Path) -> None:
    """Write the HTML page atomically and say where it went."""
    io.write_bytes_atomic(page.encode("utf-8"), path)
    log.info("wrote the HTML report %s", path)


def require_min_sqnr(choice: MethodChoice | None, min_sqnr: float, fallback: FallbackResult | None = None) -> None:
    """QualityGateError (exit 1, nothing written) when an output's held-out SQNR is under ``min_sqnr`` (after
    auto's fallback, the written model's worst output on the same feeds)."""
    if choice is None or not choice.outputs:
        raise QualityGateError(f"--min-sqnr {min_sqnr:g}: there is no scored result to check "
                               f"({choice.reason if choice is not None else 'no held-out scoring ran'}); "
                               "nothing written: give calibration data")
    if fallback is not None and fallback.verified is not None:
        if fallback.verified.sqnr_db < min_sqnr:
            raise QualityGateError(
                f"the worst output is at {fallback.verified.sqnr_db:.1f} dB SQNR on {choice.scoring} after "
                f"keeping {len(fallback.float_nodes)} layers in float, under --min-sqnr {min_sqnr:g}: nothing "
                "written; raise --max-float-layers or try --auto-fallback --min-sqnr")
        return
    worst = min(choice.outputs, key=lambda o: o.sqnr_db)
    if worst.sqnr_db < min_sqnr:
        raise QualityGateError(
            f"output {worst.output!r} is at {worst.sqnr_db:.1f} dB SQNR on {choice.scoring}, under --min-sqnr "
            f"{min_sqnr:g}: nothing written; try --auto-fallback to keep the most harmful layers in float")


def require_metric(args: argparse.Namespace, model, source, result) -> None:
    """QualityGateError (exit 1, nothing written) when the --metric-script score of the quantized model is
    more than --max-metric-drop under the float model's, on --eval-data (else the calibration data)."""
    from onnxq.analysis.compare import compare

    data = eval_source(args, data_mod.input_specs_from_model(model)) or source
    if data is None:
        raise ConfigError("--max-metric-drop needs data to score: give --eval-data DIR or calibration data")
    pre, _ = api.prepare(model)
    loss = compare(pre, result.model, data, metric=pair_metric(load_metric_script(args.metric_script))).metric
    drop = loss.float_score - loss.quant_score
    if drop > args.max_metric_drop + 1e-9 * max(1.0, abs(loss.float_score)):
        raise QualityGateError(
            f"the metric drops from {loss.float_score:.4g} (float) to {loss.quant_score:.4g} on {data.description}, "
            f"more than --max-metric-drop {args.max_metric_drop:g}: nothing written; try --auto-fallback "
            f"--max-metric-drop {args.max_metric_drop:g} --metric-script {args.metric_script}")
    log.info("metric %.4g (float %.4g) on %s", loss.quant_score, loss.float_score, data.description)


def quantize_from_args(args: argparse.Namespace, model, source, config, stats):
    """``onnxq quantize``'s work: (result, FallbackResult or None, SensitivityReport or None).

    With ``--auto-fallback``, :func:`onnxq.api.quantize_with_fallback`; else :func:`onnxq.api.quantize`,
    after collecting histograms when ``--report`` wants them and the method would not."""
    progress = progress_enabled(args)
    fallback_flags = [f for f, v in (("--max-float-layers", args.max_float_layers),
                                     ("--max-metric-drop", args.max_metric_drop)) if v is not None]
    auto = config.activations.method is Method.AUTO
    if not args.auto_fallback:
        # alone, --max-float-layers caps what --method auto leaves in float when its result is poor, and
        # --max-metric-drop (with --metric-script) gates the written model
        fallback_flags = [f for f in fallback_flags if not (auto and f == "--max-float-layers")
                          and f != "--max-metric-drop"]
        if args.max_metric_drop is not None and not args.metric_script:
            raise ConfigError("--max-metric-drop needs a metric: pass --metric-script FILE defining metric()")
        if fallback_flags:
            raise ConfigError(f"{fallback_flags[0]} is a stopping rule of the automatic fallback: add --auto-fallback")
        if args.min_sqnr is not None and not auto:
            raise ConfigError("--min-sqnr without --auto-fallback gates the held-out result of --method auto; "
                              "with an explicit method add --auto-fallback (or check with onnxq compare --min-sqnr)")
        # alone, --metric-script replaces auto's score (and serves the --max-metric-drop gate)
        search = [f for f, v in (("--metric-script", None if auto or args.max_metric_drop is not None
                                  else args.metric_script), ("--fallback-select", args.fallback_select)) if v is not None]
        if search:
            raise ConfigError(f"{search[0]} steers the automatic fallback: add --auto-fallback (--metric-script "
                              "alone scores --method auto's candidates, the default)")
        evaluation = [f for f, v in (("--eval-data", args.eval_data), ("--eval-script", args.eval_script),
                                     ("--eval-samples", args.eval_samples)) if v is not None]
        if evaluation and not args.report and args.max_metric_drop is None:
            raise ConfigError(f"{evaluation[0]} is evaluation data for --auto-fallback, --max-metric-drop or "
                              "--report (per-layer SQNR): add one of them")
        # histograms in the same pass when the report plots them or the saved statistics must serve any method
        histograms = True if (args.report or args.save_stats) else None
        metric = pair_metric(load_metric_script(args.metric_script)) if args.metric_script and auto else None
        result = api.quantize(model, source, config, stats=stats, progress=progress, histograms=histograms,
                              max_float_layers=args.max_float_layers, metric=metric)
        if args.min_sqnr is not None:
            require_min_sqnr(result.report.choice, args.min_sqnr, result.report.fallback)
        if args.max_metric_drop is not None:
            require_metric(args, model, source, result)
        return result, result.report.fallback, None
    evaluation = eval_source(args, data_mod.input_specs_from_model(model))
    if evaluation is None:
        log.warning("no --eval-data: the fallback evaluates on the calibration data (optimistic)")
        if args.eval_samples is not None and source is not None:
            evaluation = data_mod.take(source, args.eval_samples)
    metric = load_metric_script(args.metric_script) if args.metric_script else None
    return api.quantize_with_fallback(model, source, config, fallback_rule(args), eval_data=evaluation,
                                      metric=metric, stats=stats, progress=progress)


def write_quantize_report(args: argparse.Namespace, model, source, result, fallback, ranking) -> None:
    """The HTML report of ``onnxq quantize --report``: per-layer SQNR on up to 8 evaluation samples."""
    from onnxq.analysis.compare import compare

    pre, _ = api.prepare(model)
    data = eval_source(args, data_mod.input_specs_from_model(model)) or source
    layers = ()
    if data is not None:
        layers = compare(pre, result.model, data_mod.take(api.as_source(data, pre), 8), per_layer=True).layers
    page = render_html(result.report, result.plan, stats=result.stats, params=result.params, layers=layers,
                       sensitivity=ranking, fallback=fallback, title=str(args.model))
    write_report(page, args.report)
