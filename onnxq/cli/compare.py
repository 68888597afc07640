"""onnxq compare: error of a quantized model against its float model, per output and per layer.

Exit status 0 when every given tolerance holds, 1 when one is violated (a CI gate), 2 for bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import io as _bytes_io
import logging
import sys
from pathlib import Path

import numpy as np

from onnxq import io
from onnxq.analysis.compare import MetricFn, compare
from onnxq.analysis.dump import dump_tensors
from onnxq.analysis.tolerances import Tolerances, check_tolerances
from onnxq.cli import progress_enabled
from onnxq.cli.common import add_data_args, build_source, integer, number
from onnxq.cli.scripts import load_metric_script, pair_metric
from onnxq.collect import data as data_mod
from onnxq.errors import ConfigError, OutputError
from onnxq.report.compare_render import DEFAULT_TOP, compare_json, compare_text

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare a quantized model with its float model", description=__doc__)
    p.add_argument("float_model", help="float ONNX model (the reference)")
    p.add_argument("quant_model", help="quantized ONNX model (same inputs and output names)")
    add_data_args(p, prefix="data")
    p.add_argument("--per-layer", action="store_true",
                   help="also the SQNR of every tensor both models produce by name, worst first")
    p.add_argument("--top", type=integer(0), default=DEFAULT_TOP, metavar="N",
                   help=f"layers shown in the text table (default {DEFAULT_TOP}; 0 = all; json has all)")
    p.add_argument("--optimize", action="store_true",
                   help="run the quantized model with onnxruntime graph optimizations for its outputs "
                        "(how an ort-cpu model is deployed; default: off, exact fake quantization)")
    p.add_argument("--metric-script", metavar="FILE",
                   help="Python file exposing metric(outputs) -> score (higher is better) or "
                        "metric(outputs_float, outputs_quant) -> (float_score, quant_score); outputs is a list "
                        "over samples of the outputs list (runs that file's code)")
    p.add_argument("--dump", metavar="DIR",
                   help="write every intermediate tensor of both models as DIR/float/NNNNN.npz and "
                        "DIR/quant/NNNNN.npz")
    p.add_argument("--dump-samples", type=integer(1), default=1, metavar="N", help="samples to dump (default 1)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="report format on stdout")
    t = p.add_argument_group("tolerances (exit status 1 when one is violated)")
    t.add_argument("--min-sqnr", type=number(), metavar="DB", help="minimum SQNR of every output, in dB")
    t.add_argument("--min-cosine", type=number(-1, 1), metavar="X", help="minimum cosine of every output, in [-1, 1]")
    t.add_argument("--min-top1", type=number(0, 100), metavar="PCT",
                   help="minimum top-1 agreement, in %% (0-100), of the outputs that are plausibly class scores: "
                        "[batch, classes] rows not of unit norm (L2-normalised rows are embeddings)")
    t.add_argument("--max-loss", type=number(0), metavar="PCT",
                   help="maximum quantization loss |quant - float| / |float| x 100 of the "
                        "--metric-script metric")
    p.set_defaults(run=run)


def load_metric(path: str | Path) -> MetricFn:
    """The metric script as ``(outputs_float, outputs_quant) -> (float_score, quant_score)``, whichever form
    it defines (onnxq.cli.scripts)."""
    return pair_metric(load_metric_script(path))


def _tolerances(args: argparse.Namespace) -> Tolerances:
    tol = Tolerances(args.min_sqnr, args.min_cosine, args.min_top1, args.max_loss)
    if tol.max_loss_pct is not None and not args.metric_script:
        raise ConfigError("--max-loss needs a metric: pass --metric-script FILE defining metric()")
    return tol


def _dump(args, float_model, quant_model, source) -> None:
    root = Path(args.dump)
    if root.exists() and not root.is_dir():
        raise OutputError(f"--dump {root} is a file; give a folder")
    try:
        for sub in ("float", "quant"):
            (root / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {root}: {exc.strerror}; choose a writable folder") from None
    count = 0
    for k, (f_vals, q_vals) in enumerate(dump_tensors(float_model, quant_model, source, args.dump_samples)):
        for sub, values in (("float", f_vals), ("quant", q_vals)):
            buf = _bytes_io.BytesIO()
            np.savez(buf, **values)
            io.write_bytes_atomic(buf.getvalue(), root / sub / f"{k:05d}.npz")
        count = k + 1
    log.info("dumped the tensors of %d sample(s) into %s", count, root)


def run(args: argparse.Namespace) -> int:
    tol = _tolerances(args)
    metric = load_metric(args.metric_script) if args.metric_script else None
    float_model = io.load_model(args.float_model)
    quant_model = io.load_model(args.quant_model)
    source = build_source(args, data_mod.input_specs_from_model(float_model), prefix="data")
    if args.dump:
        _dump(args, float_model, quant_model, source)
    report = compare(float_model, quant_model, source, per_layer=args.per_layer, optimize=args.optimize,
                     metric=metric, progress=progress_enabled(args))
    report = dataclasses.replace(report, float_model=str(args.float_model), quant_model=str(args.quant_model))
    report = dataclasses.replace(report, violations=check_tolerances(report, tol))
    if not args.quiet:
        print(compare_json(report) if args.format == "json" else compare_text(report, top=args.top,
                                                                                  gated=tol != Tolerances()))
    else:
        for line in report.violations:
            print(f"onnxq: tolerance violated: {line}", file=sys.stderr)
    return 1 if report.violations else 0
