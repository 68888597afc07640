"""onnxq calibrate: run the model once and save statistics; any method can then solve from them."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxq import api, io
from onnxq.cli import progress_enabled
from onnxq.cli.common import add_data_args, add_quant_args, build_config, build_source
from onnxq.collect import data as data_mod
from onnxq.collect.stats_file import save_stats


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="collect activation statistics into an .npz", description=__doc__)
    p.add_argument("model", help="float ONNX model")
    p.add_argument("-o", "--output", required=True, help="statistics file (.npz)")
    add_data_args(p)
    add_quant_args(p, scope="collect")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    io.check_output_path(Path(args.output), args.model)  # before calibrating, not after
    model = io.load_model(args.model)
    source = build_source(args, data_mod.input_specs_from_model(model), seed=config.seed)
    result = api.calibrate(model, source, config, progress=progress_enabled(args))
    save_stats(args.output, result.stats, {"model": str(args.model), "target": config.target.value,
                                           "samples": str(result.samples)})
    if not args.quiet:
        runs = f" ({result.runs})" if result.runs else ""
        print(f"collected statistics of {len(result.stats)} tensors over {result.samples} samples{runs} "
              f"into {args.output}")
    return 0
