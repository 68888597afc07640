"""onnxq inspect: show the plan (what would be quantized, what stays float, and why) without data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import onnx

from onnxq import api, io
from onnxq.cli.common import add_quant_args, build_config
from onnxq.graph.existing import ExistingQuantization, existing_quantization
from onnxq.graph.query import import_graph
from onnxq.graph.scopes import node_paths
from onnxq.placement import plan
from onnxq.records import QuantPlan
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
    found = existing_quantization(io.load_model(args.model))
    if found is not None:  # show what it carries; planning it again would stack Q/DQ on Q/DQ
        print(json.dumps(dataclasses.asdict(found), indent=2) if args.format == "json" else existing_text(found))
        return 0
    pre, notes = api.prepare(args.model)
    api.check_exclusions(pre, config)
    if config.equalize:
        log.warning("the plan is shown without --equalize: equalization measures channel ranges on calibration "
                    "data, which inspect does not read (quantize and calibrate apply it)")
    qplan = plan(pre, config)
    paths = body_paths(pre)
    if args.format == "json":
        # names stay as the plan has them (a plan read back addresses nodes by name); paths alongside
        print(json.dumps({"preprocess": notes, **qplan.to_dict(), **({"paths": paths} if paths else {})}, indent=2))
    else:
        for note in notes:
            print(f"preprocess: {note}")
        print(plan_text(with_paths(qplan, paths)))
    return 0


def body_paths(model: onnx.ModelProto) -> dict[str, str]:
    """The path of every node inside a control-flow body (``If_0/then_branch/Conv_3``), by node name."""
    return {name: path for name, path in node_paths(import_graph(model)).items() if path != name}


def with_paths(qplan: QuantPlan, paths: dict[str, str]) -> QuantPlan:
    """``qplan`` for display: body nodes named by their paths, so a reader sees where each one lives."""
    if not paths:
        return qplan
    at = lambda name: paths.get(name, name)
    specs = tuple(dataclasses.replace(s, consumers=tuple((at(n), i) for n, i in s.consumers)) for s in qplan.specs)
    skips = tuple(dataclasses.replace(k, node=at(k.node)) for k in qplan.skips)
    return dataclasses.replace(qplan, specs=specs, skips=skips, quantized_nodes=tuple(map(at, qplan.quantized_nodes)))


def existing_text(found: ExistingQuantization) -> str:
    """The quantization a model carries: op counts, then one row per dequantized tensor."""
    lines = [f"already quantized: {found.summary()}",
             "onnxq quantize refuses it: give the float model it was made from to quantize again", ""]
    rows = [[t.tensor, t.kind, t.dtype, "-" if t.axis is None else str(t.axis),
             f"{t.scale_min:.4g}" if t.scale_min == t.scale_max else f"{t.scale_min:.4g}..{t.scale_max:.4g}",
             t.zero_point, ", ".join(t.consumers)] for t in found.tensors]
    if rows:
        headers = ["tensor", "kind", "dtype", "axis", "scale", "zero point", "read by"]
        widths = [max(len(x) for x in col) for col in zip(headers, *rows)]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        lines += [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    return "\n".join(lines)
