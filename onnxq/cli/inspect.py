"""onnxq inspect: show the plan (what would be quantized, what stays float, and why) without data."""

from __future__ import annotations

import argparse
import json
import logging

from onnxq import api
from onnxq.cli.common import add_quant_args, build_config
from onnxq.placement import plan
from onnxq.report.render import plan_text

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="print the quantization plan of a model", description=__doc__)
    p.add_argument("model", help="float ONNX model")
    add_quant_args(p, scope="plan")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    pre, notes = api.prepare(args.model)
    api.check_exclusions(pre, config)
    if config.equalize:
        log.warning("the plan is shown without --equalize: equalization measures channel ranges on calibration "
                    "data, which inspect does not read (quantize and calibrate apply it)")
    qplan = plan(pre, config)
    if args.format == "json":
        print(json.dumps({"preprocess": notes, **qplan.to_dict()}, indent=2))
    else:
        for note in notes:
            print(f"preprocess: {note}")
        print(plan_text(qplan))
    return 0
