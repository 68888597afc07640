"""onnxq demo: quantize the embedded text-direction classifier on rendered text lines and score it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from onnxq import api, demo, io, runtime
from onnxq.analysis.metrics import top1_agreement
from onnxq.cli import progress_enabled
from onnxq.cli.common import integer
from onnxq.collect import data as data_mod
from onnxq.config import ActivationSpec, QuantConfig
from onnxq.report.render import report_text


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="quantize an embedded real model on generated data (no files needed)",
                       description=__doc__)
    p.add_argument("-o", "--output", default="onnxq-demo.int8.onnx", help="where to write the quantized model")
    p.add_argument("--method", default="auto", choices=["auto", "minmax", "entropy", "mse", "percentile"])
    p.add_argument("--target", default="tensorrt", choices=["tensorrt", "ort-cpu"])
    p.add_argument("--calib-size", type=integer(1), default=64, metavar="N",
                   help="rendered text lines to calibrate on (default 64)")
    p.add_argument("--eval-size", type=integer(1), default=300, metavar="N",
                   help="rendered text lines to score on (default 300)")
    p.set_defaults(run=run)


def _predict(model, data) -> np.ndarray:
    session = runtime.make_session(model)
    return np.concatenate([runtime.run(session, f)[0] for f in data])


def run(args: argparse.Namespace) -> int:
    config = QuantConfig(target=args.target, activations=ActivationSpec(method=args.method))
    model = io.load_model(demo.model_path())
    calib = data_mod.from_iterable(demo.feeds(args.calib_size, seed=1),
                                  description=f"{args.calib_size} rendered text lines (seed 1)")
    result = api.quantize(model, calib, config, progress=progress_enabled(args))
    report = dataclasses.replace(result.report, model="embedded ch_ppocr_mobile_v2.0_cls (PaddleOCR)")
    result = dataclasses.replace(result, report=report, source=str(demo.model_path()))
    result.save(args.output)
    eval_set = list(demo.samples(args.eval_size, seed=2))
    labels = np.array([y for _, y in eval_set])
    data = [f for f, _ in eval_set]
    ref = _predict(result_float(model), data)
    out = _predict(result.model, data)
    print(report_text(result.report))
    print(f"wrote      {Path(args.output)}")
    print(f"eval       {len(labels)} rendered text lines (half rotated 180 degrees)")
    print(f"accuracy   float {100 * np.mean(ref.argmax(1) == labels):.1f} %   "
          f"int8 {100 * np.mean(out.argmax(1) == labels):.1f} %   "
          f"agreement {100 * top1_agreement(ref, out):.1f} %")
    return 0


def result_float(model):
    pre, _ = api.prepare(model)
    return pre
