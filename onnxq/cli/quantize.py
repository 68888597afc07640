"""onnxq quantize: calibrate and write a QDQ model."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from onnxq import io
from onnxq.cli.common import add_data_args, add_quant_args, build_config, build_source, check_dims_use
from onnxq.cli.quantize_dynamic import run_dynamic, wants_dynamic
from onnxq.cli.sensitivity import add_fallback_args, quantize_from_args, write_quantize_report
from onnxq.collect import data as data_mod
from onnxq.collect.stats_file import load_stats, save_stats
from onnxq.errors import ConfigError
from onnxq.report.render import report_json, report_text
from onnxq.report.sensitivity_render import fallback_text


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model to INT8 Q/DQ", description=__doc__)
    p.add_argument("model", help="float ONNX model")
    p.add_argument("-o", "--output", required=True, help="where to write the quantized model")
    add_data_args(p)
    add_quant_args(p)
    p.add_argument("--save-stats", metavar="FILE", help="also save the collected statistics (.npz)")
    p.add_argument("--load-stats", metavar="FILE", help="solve from saved statistics instead of running the model")
    p.add_argument("--report-json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--format", choices=["text", "json"], default="text", help="report format on stdout")
    p.add_argument("--mode", dest="quant_mode", choices=["static", "dynamic"],
                   help="static (default): calibrated Q/DQ; dynamic: no calibration data, onnxruntime's "
                        "DynamicQuantizeMatMul/DynamicQuantizeLSTM quantize activations at run time (ort-cpu)")
    add_fallback_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if wants_dynamic(args):
        return run_dynamic(args)
    if args.save_stats and args.load_stats:
        raise ConfigError("--save-stats saves statistics collected by this run, and --load-stats skips "
                          "collecting: drop one (the loaded file already holds them)")
    config = build_config(args)
    check_dims_use(args)  # also when --load-stats leaves the data unread
    io.check_output_path(Path(args.output), args.model)
    # refused before any work, not after the model is written
    for side in (args.save_stats, args.report_json, args.report):
        if side:
            io.check_output_path(Path(side), args.model)
    stats = None
    source = None
    if args.load_stats:
        stats, _meta = load_stats(args.load_stats)
    model = io.load_model(args.model)
    specs = data_mod.input_specs_from_model(model)
    if not (args.load_stats and args.calib_data is None and args.calib_script is None and args.random is None):
        source = build_source(args, specs, seed=config.seed)
    result, fallback, ranking = quantize_from_args(args, model, source, config, stats)
    result = dataclasses.replace(result, report=dataclasses.replace(result.report, model=str(args.model)),
                                 source=str(args.model))
    if args.save_stats:
        save_stats(args.save_stats, result.stats, {"model": str(args.model), "target": config.target.value,
                                                   "samples": str(result.report.samples)})
    result.save(args.output)
    if args.report:
        write_quantize_report(args, model, source, result, fallback, ranking)
    steps = fallback.to_dict() if fallback is not None else None
    if args.report_json:
        io.write_bytes_atomic(report_json(result.report, steps).encode(), args.report_json)
    if not args.quiet:
        print(report_json(result.report, steps) if args.format == "json"
              else report_text(result.report, verbose=args.verbose > 0))
        if args.format == "text":
            if fallback is not None:
                print(fallback_text(fallback))
            print(f"wrote      {args.output}")
    return 0
