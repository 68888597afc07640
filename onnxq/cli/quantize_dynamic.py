"""``onnxq quantize --mode dynamic``: no calibration; the flags that only steer calibration are refused."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from onnxq import api, io
from onnxq.cli.common import build_config, build_source, check_dims_use
from onnxq.collect import data as data_mod
from onnxq.config import Mode, QuantConfig, Target
from onnxq.errors import ConfigError
from onnxq.report.render import report_json, report_text

# flags whose only effect is on calibration, statistics or the calibrated model's search (dest, flag)
CALIBRATION_ONLY = (
    ("method", "--method"), ("percentile", "--percentile"), ("num_bins", "--num-bins"),
    ("batch_statistic", "--batch-statistic"), ("batch_size", "--batch-size"), ("memory_mb", "--memory-mb"),
    ("equalize", "--equalize"), ("save_stats", "--save-stats"), ("load_stats", "--load-stats"),
    ("auto_fallback", "--auto-fallback"), ("max_float_layers", "--max-float-layers"), ("min_sqnr", "--min-sqnr"),
    ("max_metric_drop", "--max-metric-drop"), ("metric_script", "--metric-script"),
    ("fallback_select", "--fallback-select"), ("eval_data", "--eval-data"), ("eval_script", "--eval-script"),
    ("eval_samples", "--eval-samples"), ("report", "--report"), ("weight_format", "--weight-format"),
    ("convtranspose_per_tensor", "--convtranspose-per-tensor"),
)
DATA_FLAGS = ("calib_data", "calib_script", "random")


def wants_dynamic(args: argparse.Namespace) -> bool:
    """``--mode dynamic``, or a ``--config`` file with ``mode = "dynamic"`` and no ``--mode``."""
    if args.quant_mode is not None:
        return args.quant_mode == Mode.DYNAMIC.value
    return bool(args.config) and build_config(_with_target(args)).mode is Mode.DYNAMIC


def dynamic_config(args: argparse.Namespace) -> QuantConfig:
    """The config of a dynamic run: ort-cpu unless ``--target`` says otherwise (then QuantConfig refuses)."""
    given = [flag for dest, flag in CALIBRATION_ONLY if getattr(args, dest, None) not in (None, False, [])]
    if given:
        raise ConfigError(f"{given[0]} steers calibration, and --mode dynamic calibrates nothing (activations are "
                          "quantized at run time): drop it, or use --mode static")
    config = build_config(_with_target(args))
    weights = dataclasses.replace(config.weights, format=None)  # resolved again for ort-cpu
    return dataclasses.replace(config, target=Target(args.target or Target.ORT_CPU.value), weights=weights,
                               mode=Mode.DYNAMIC)


def _with_target(args: argparse.Namespace) -> argparse.Namespace:
    # the config's target is replaced in dynamic_config; reading it here must not refuse ort-cpu-only flags
    return argparse.Namespace(**{**vars(args), "target": args.target or Target.ORT_CPU.value})


def run_dynamic(args: argparse.Namespace) -> int:
    config = dynamic_config(args)
    check_dims_use(args)
    io.check_output_path(Path(args.output), args.model)
    if args.report_json:
        io.check_output_path(Path(args.report_json), args.model)
    model = io.load_model(args.model)
    source = None
    if any(getattr(args, d, None) is not None for d in DATA_FLAGS):
        source = build_source(args, data_mod.input_specs_from_model(model), seed=config.seed)
    result = api.quantize(model, source, config)
    result = dataclasses.replace(result, report=dataclasses.replace(result.report, model=str(args.model)),
                                 source=str(args.model))
    result.save(args.output)
    if args.report_json:
        io.write_bytes_atomic(report_json(result.report, None).encode(), args.report_json)
    if not args.quiet:
        print(report_json(result.report, None) if args.format == "json"
              else report_text(result.report, verbose=args.verbose > 0))
        if args.format == "text":
            print(f"wrote      {args.output}")
    return 0
