"""Accuracy of onnxq against the float models and onnxruntime's own quantizer, on the real benchmark models.

For each model recipe (``models/<key>.py``), in one invocation:

* the float metric;
* onnxq, TensorRT target, with each calibration method (minmax, entropy, mse, percentile), solved from
  one collection of statistics (collect once, solve many);
* onnxq, onnxruntime-CPU target (entropy by default: ``--ort-cpu-method``);
* ``onnxruntime.quantization.quantize_static`` as a user runs it: "TRT-style" (QDQ, MinMax, per-channel,
  int8 activations and weights, ActivationSymmetric=True, QuantizeBias=False) and its plain defaults.

Evaluation mode matters (see models/common.py): TensorRT-form models (int8 symmetric activations: onnxq's
TensorRT target and onnxruntime's TRT-style) are evaluated as exact fake quantization
(``ONNXQ_EVAL_OPT=exact``: onnxruntime graph optimizations off), which is what a TensorRT engine computes;
onnxruntime on x86 without VNNI fuses them into int8 kernels that saturate. Models meant for onnxruntime
on the CPU (onnxq ort-cpu, onnxruntime defaults) are evaluated with onnxruntime's default optimizations
(how they are deployed) and exactly.

When a target is missed, ``onnxq compare --per-layer`` (the library function) runs on the best onnxq
TensorRT model over the first ``--blame-samples`` evaluation feeds and the worst layers are listed.

Usage:
    python benchmarks/accuracy.py                          # everything; writes benchmarks/results/accuracy.md
    python benchmarks/accuracy.py --models ppocr_cls --methods entropy ort-trt --limit 50
Subset or ``--limit`` runs print the tables and write only where ``--out`` says. MiniLM takes ~2 min per
evaluation on 2 cores; the full run takes well over half an hour.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing; `models` is a namespace package

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnxruntime import quantization as ortq  # noqa: E402

from benchmarks.provenance import provenance  # noqa: E402
from onnxq import api  # noqa: E402
from onnxq.analysis.compare import compare  # noqa: E402
from onnxq.collect import data  # noqa: E402
from onnxq.config import ActivationSpec, QuantConfig  # noqa: E402

log = logging.getLogger("accuracy")

ONNXQ_METHODS = ("minmax", "entropy", "mse", "percentile")
METHODS = ONNXQ_METHODS + ("auto", "ort-cpu", "ort-trt", "ort-default")  # auto: `onnxq quantize` with no flags


@dataclass(frozen=True)
class ModelSpec:
    """How to read one recipe's evaluation: the metric, the target and whether to compare with float."""

    key: str
    title: str
    metric: str  # main key of evaluate()'s dict
    metric_name: str
    target: str  # as the issue states it
    float_ref: bool  # pass float_model= to evaluate (agreement, box F1, cosine)

    def met(self, r: dict[str, float], f: dict[str, float]) -> bool:
        k = self.key
        if k == "efficientnet_lite0":
            return r["agreement"] >= 98.5 and f["top1"] - r["top1"] <= 0.5
        if k == "yolox_nano":
            return r["map"] >= 32.4
        if k == "minilm_l6_v2":
            return r["spearman"] >= 81.0
        if k == "ppocr_det":
            return r["hmean"] >= 86.5 and r.get("box_f1", 1.0) >= 0.95
        if k == "ppocrv6_rec":
            return f["accuracy"] - r["accuracy"] <= 2.0
        if k == "vit_saliency":
            return r["pearson"] >= 0.98
        if k == "silero_vad":
            return r["accuracy"] >= 98.5
        if k in ("ddddocr_ocr", "romanizer_encoder", "romanizer_decoder"):
            return r.get("agreement", 100.0) >= 97.0
        return r["accuracy"] >= 93.0 and r.get("agreement", 100.0) >= 98.0

    def cell(self, r: dict[str, float]) -> str:
        k = self.key
        if k == "efficientnet_lite0":
            return f"{r['top1']:.2f} / {r['agreement']:.2f}" if "agreement" in r else f"{r['top1']:.2f}"
        if k == "ppocr_det" and "box_f1" in r:
            return f"{r['hmean']:.2f} (F1 vs float {r['box_f1']:.3f})"
        if k in ("ppocr_cls", "ppocrv6_rec") and "agreement" in r:
            return f"{r['accuracy']:.2f} / {r['agreement']:.2f}"
        if k == "vit_saliency":
            return f"{r['pearson']:.4f} / {r['iou']:.3f}"
        if k in ("silero_vad", "ddddocr_ocr", "romanizer_encoder", "romanizer_decoder"):
            main = "exact" if k.startswith("romanizer") else "accuracy"
            return f"{r[main]:.2f} / {r['agreement']:.2f}" if "agreement" in r else f"{r[main]:.2f}"
        return f"{r[self.metric]:.2f}"

    def rank(self, r: dict[str, float]) -> float:
        """What "best method" maximises."""
        return r["agreement"] if self.key == "efficientnet_lite0" else r[self.metric]


SPECS = {s.key: s for s in (
    ModelSpec("efficientnet_lite0", "EfficientNet-Lite0", "agreement", "top-1 % / agreement % (400 imgs)",
              "agreement >= 98.5 %, top-1 drop <= 0.5", True),
    ModelSpec("yolox_nano", "YOLOX-Nano", "map", "mAP@[.5:.95] (128 val imgs)", "mAP >= 32.4", True),
    ModelSpec("minilm_l6_v2", "MiniLM-L6-v2", "spearman", "STS-B Spearman x100 (1379 pairs)", ">= 81.0", False),
    ModelSpec("ppocr_det", "PP-OCRv4 det", "hmean", "Hmean @IoU.5 (48 imgs)", ">= 86.5, box F1 vs float >= 0.95",
              True),
    ModelSpec("ppocr_cls", "PP-OCR cls", "accuracy", "accuracy % / agreement % (500 crops)",
              ">= 93.0 %, agreement >= 98 %", True),
    ModelSpec("ppocrv6_rec", "PP-OCRv6 rec", "accuracy", "word accuracy % / agreement % (500 rendered words)",
              "accuracy drop <= 2", True),
    ModelSpec("vit_saliency", "ViT-S saliency", "pearson", "Pearson r / IoU@0.5 vs float (COCO128)",
              "Pearson >= 0.98", True),
    ModelSpec("silero_vad", "Silero VAD", "accuracy", "frame accuracy % / agreement % (60 espeak-ng clips)",
              "frame accuracy >= 98.5 %", True),
    ModelSpec("ddddocr_ocr", "ddddocr common", "agreement", "accuracy % / agreement % (500 rendered captchas)",
              "agreement >= 97 %", True),
    ModelSpec("romanizer_encoder", "Romanizer encoder", "agreement",
              "exact % / agreement % (2000 names, float decoder)", "agreement >= 97 % (both quantized)", True),
    ModelSpec("romanizer_decoder", "Romanizer decoder", "agreement",
              "exact % / agreement % (2000 names, float encoder)", "agreement >= 97 % (both quantized)", True),
)}


@dataclass
class Row:
    model: str
    quantizer: str  # "float", "onnxq TensorRT", "onnxq ORT-CPU", "onnxruntime TRT-style", "onnxruntime default"
    method: str
    eval_mode: str  # "exact" or "optimized"
    result: dict[str, float] = field(default_factory=dict)
    error: str = ""
    quantize_s: float = 0.0
    eval_s: float = 0.0
    path: str = ""  # the quantized model (before freezing), for the per-layer blame


@contextlib.contextmanager
def eval_mode(mode: str) -> Iterator[None]:
    """ONNXQ_EVAL_OPT=exact (optimizations off) or unset (onnxruntime defaults) for models/common.session."""
    old = os.environ.get("ONNXQ_EVAL_OPT")
    if mode == "exact":
        os.environ["ONNXQ_EVAL_OPT"] = "exact"
    else:
        os.environ.pop("ONNXQ_EVAL_OPT", None)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ONNXQ_EVAL_OPT", None)
        else:
            os.environ["ONNXQ_EVAL_OPT"] = old


def recipe(key: str):
    return importlib.import_module(f"models.{key}")


def evaluate(mod, spec: ModelSpec, path: Path, float_path: Path | None, limit: int | None) -> dict[str, float]:
    kwargs = {}
    if float_path is not None and spec.float_ref:
        kwargs["float_model"] = float_path
    if limit is not None and "limit" in inspect.signature(mod.evaluate).parameters:
        kwargs["limit"] = limit
    return {k: float(v) for k, v in mod.evaluate(path, **kwargs).items()}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


def run_eval(rows: list[Row], row: Row, mod, spec, path, float_path, limit) -> None:
    t = time.perf_counter()
    try:
        with eval_mode(row.eval_mode):
            row.result = evaluate(mod, spec, path, float_path, limit)
    except Exception as exc:  # an invalid model from a quantizer is a result, not a crash
        row.error = _one_line(exc)
    row.eval_s = time.perf_counter() - t
    rows.append(row)
    log.info("%s | %s %s [%s] -> %s%s (%.0f s)", row.model, row.quantizer, row.method, row.eval_mode,
             row.result, row.error, row.eval_s)


def freeze_constant_qdq(path: Path) -> Path:
    """A copy of ``path`` whose Q/DQ nodes with constant inputs (weights) are replaced by their values,
    computed by onnxruntime's own QuantizeLinear/DequantizeLinear kernels: bit-identical to an exact run.

    Why: with graph optimizations off, onnxruntime re-quantizes every weight on every run, and its
    per-channel QuantizeLinear is slow (MiniLM: ~1.5 s of ~1.8 s per sentence). Constant folding would fix
    that but the optimizer levels that fold also fuse Q/DQ into int8 kernels, which this evaluation avoids.
    """
    model = onnx.load(str(path))
    const = {t.name for t in model.graph.initializer}
    folded = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and all(i in const for i in node.input if i):
            folded.append(node)
            const.update(node.output)
    if not folded:
        return path
    outputs = [n.output[0] for n in folded if n.op_type == "DequantizeLinear"]
    side = onnx.helper.make_graph(folded, "fold", [], [onnx.ValueInfoProto(name=o) for o in outputs],
                                  initializer=list(model.graph.initializer))
    side_model = onnx.helper.make_model(side, opset_imports=model.opset_import, ir_version=model.ir_version)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    values = ort.InferenceSession(side_model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        outputs, {})
    keep = [n for n in model.graph.node if n not in folded]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, o) for o, v in zip(outputs, values))
    used = {i for n in keep for i in n.input} | {o.name for o in model.graph.output}
    inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    out = path.with_name(path.stem + ".frozen.onnx")
    onnx.save(model, str(out))
    return out


# ------------------------------------------------------------------------------------------ quantizers

class _Reader(ortq.CalibrationDataReader):
    def __init__(self, feeds: list[dict]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def ort_quantize(float_path: Path, out: Path, feeds: list[dict], trt_style: bool) -> None:
    """onnxruntime's quantize_static as a user calls it (no pre-processing step)."""
    if trt_style:
        ortq.quantize_static(
            str(float_path), str(out), _Reader(feeds), quant_format=ortq.QuantFormat.QDQ,
            per_channel=True, activation_type=ortq.QuantType.QInt8, weight_type=ortq.QuantType.QInt8,
            calibrate_method=ortq.CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "QuantizeBias": False})
    else:
        ortq.quantize_static(str(float_path), str(out), _Reader(feeds))
    onnx.checker.check_model(str(out))  # a quantizer that writes an invalid model fails here


def onnxq_models(float_path: Path, feeds: list[dict], methods: list[str], work: Path, ort_cpu_method: str,
                 equalize: bool = False) -> Iterator[tuple[str, str, Path | None, float, str]]:
    """(quantizer, method, path or None, seconds, error) for each requested onnxq variant.

    The TensorRT methods solve from one collection of histograms; each quantize() gets the calibration feeds
    too, as ``onnxq quantize --load-stats S --calib-data DIR`` would: bias correction measures its means on
    all of them (and --equalize its channel maxima), exactly what a one-shot ``onnxq quantize`` does."""
    trt = [m for m in methods if m in ONNXQ_METHODS]
    name = "onnxq TensorRT" + (" +equalize" if equalize else "")
    if trt:
        t = time.perf_counter()
        try:
            stats = api.calibrate(float_path, data.from_iterable(feeds), QuantConfig(
                activations=ActivationSpec(method="entropy"), equalize=equalize)).stats
        except Exception as exc:
            for m in trt:
                yield name, m, None, 0.0, _one_line(exc)
            stats = None
        collect_s = time.perf_counter() - t
        for m in trt if stats is not None else []:
            t = time.perf_counter()
            out = work / f"{float_path.stem}.onnxq_trt_{m}{'_eq' if equalize else ''}.onnx"
            try:
                result = api.quantize(float_path, data.from_iterable(feeds),
                                      QuantConfig(activations=ActivationSpec(method=m), equalize=equalize),
                                      stats=stats)
                result.save(out)
                yield name, m, out, collect_s + time.perf_counter() - t, ""
            except Exception as exc:
                yield name, m, None, 0.0, _one_line(exc)
    if "auto" in methods and not equalize:  # the defaults: what `onnxq quantize MODEL -o OUT --calib-data DIR` does
        t = time.perf_counter()
        out = work / f"{float_path.stem}.onnxq_defaults.onnx"
        try:
            result = api.quantize(float_path, data.from_iterable(feeds), QuantConfig())
            result.save(out)
            yield DEFAULTS, result.report.method, out, time.perf_counter() - t, ""
        except Exception as exc:
            yield DEFAULTS, "auto", None, 0.0, _one_line(exc)
    if "ort-cpu" in methods:
        t = time.perf_counter()
        out = work / f"{float_path.stem}.onnxq_ortcpu_{ort_cpu_method}.onnx"
        try:
            api.quantize(float_path, data.from_iterable(feeds), QuantConfig(
                target="ort-cpu", activations=ActivationSpec(method=ort_cpu_method))).save(out)
            yield "onnxq ORT-CPU", ort_cpu_method, out, time.perf_counter() - t, ""
        except Exception as exc:
            yield "onnxq ORT-CPU", ort_cpu_method, None, 0.0, _one_line(exc)


def ort_models(float_path: Path, feeds: list[dict], methods: list[str], work: Path
               ) -> Iterator[tuple[str, str, Path | None, float, str]]:
    for key, trt_style, name, method in (("ort-trt", True, "onnxruntime TRT-style", "minmax S8S8 sym per-channel"),
                                         ("ort-default", False, "onnxruntime default", "defaults")):
        if key not in methods:
            continue
        out = work / f"{float_path.stem}.{key}.onnx"
        t = time.perf_counter()
        try:
            ort_quantize(float_path, out, feeds, trt_style)
            yield name, method, out, time.perf_counter() - t, ""
        except Exception as exc:
            yield name, method, None, time.perf_counter() - t, _one_line(exc)


# ------------------------------------------------------------------------------------------ per model

CPU_FORMS = ("onnxq ORT-CPU", "onnxruntime default")
DEFAULTS = "onnxq defaults (TensorRT)"


def run_model(key: str, args: argparse.Namespace, work: Path) -> list[Row]:
    mod, spec = recipe(key), SPECS[key]
    float_path = Path(mod.build())
    feeds = list(mod.calib_feeds())
    log.info("%s: %d calibration feeds", key, len(feeds))
    rows: list[Row] = []
    run_eval(rows, Row(key, "float", "-", "optimized"), mod, spec, float_path, None, args.limit)
    variants = list(onnxq_models(float_path, feeds, args.methods, work, args.ort_cpu_method))
    if args.equalize:
        variants += list(onnxq_models(float_path, feeds, [m for m in args.methods if m != "ort-cpu"], work,
                                      args.ort_cpu_method, equalize=True))
    variants += list(ort_models(float_path, feeds, args.methods, work))
    for quantizer, method, path, seconds, error in variants:
        modes = ("optimized", "exact") if quantizer in CPU_FORMS else ("exact",)
        for mode in modes:
            row = Row(key, quantizer, method, mode, quantize_s=seconds, error=error, path=str(path or ""))
            if path is None:
                rows.append(row)
                continue
            run_eval(rows, row, mod, spec, freeze_constant_qdq(path) if mode == "exact" else path, float_path,
                     args.limit)
    return rows


def missed_rows(key: str, rows: list[Row]) -> list[Row]:
    """The best onnxq TensorRT row and the onnxq ORT-CPU (optimized) row of ``key`` that miss the target."""
    spec = SPECS[key]
    flt = next((r for r in rows if r.model == key and r.quantizer == "float" and r.result), None)
    trt = [r for r in rows if r.model == key and r.quantizer == "onnxq TensorRT" and r.result]
    cpu = [r for r in rows if r.model == key and r.quantizer == "onnxq ORT-CPU" and r.eval_mode == "optimized"
           and r.result]
    picks = ([max(trt, key=lambda r: spec.rank(r.result))] if trt else []) + cpu
    return [r for r in picks if flt is not None and not spec.met(r.result, flt.result)]


def blame(key: str, best: Row, samples: int, top: int) -> list[str]:
    """Worst layers of one quantized model (per-layer SQNR against float), as markdown lines."""
    mod, spec = recipe(key), SPECS[key]
    float_path = Path(mod.build())
    qpath = Path(best.path)
    feeds = list(mod.eval_feeds(limit=samples)) if "limit" in inspect.signature(mod.eval_feeds).parameters \
        else list(mod.eval_feeds())[:samples]
    report = compare(onnx.load(str(float_path)), onnx.load(str(qpath)), data.from_iterable(feeds), per_layer=True)
    lines = [f"### {spec.title}: {best.quantizer} {best.method}, per-layer SQNR over {report.samples} eval samples",
             "", "output: " + ", ".join(f"`{o.name}` SQNR {o.sqnr_db:.1f} dB, cosine {o.cosine:.4f}"
                                        for o in report.outputs), "",
             "| tensor | op | node | role | SQNR dB | before own Q/DQ | position |", "|---|---|---|---|---|---|---|"]
    for r in report.layers[:top]:
        pre = "" if r.pre_qdq_sqnr_db is None else f"{r.pre_qdq_sqnr_db:.1f}"
        lines.append(f"| `{r.tensor}` | {r.op_type} | `{r.node}` | {r.role} | {r.sqnr_db:.1f} | {pre} | {r.position} |")
    by_position = sorted((r for r in report.layers if r.role != "weight"), key=lambda r: r.position)
    first_bad = next((r for r in by_position if r.sqnr_db < 20.0), None)
    if first_bad is not None:
        lines += ["", f"First tensor (graph order) below 20 dB: `{first_bad.tensor}` ({first_bad.op_type}, "
                      f"{first_bad.sqnr_db:.1f} dB)."]
    drops = local_drops(onnx.load(str(qpath)), report.layers)[:top]
    if drops:
        lines += ["", "Where the error is added (not where it arrives): per node, its worst input as the node reads "
                      "it, its output, the output after its own Q/DQ, and the SQNR of the noise it adds alone "
                      "(10 log10 of 1 / (10^(-out/10) - 10^(-in/10))), lowest first. Nodes with an input that "
                      "both models do not share are left out.", "",
                  "| tensor | op | node | input dB | output dB | after own Q/DQ dB | added noise alone dB |",
                  "|---|---|---|---|---|---|---|"]
        for local, worst_in, r in drops:
            out_db = r.pre_qdq_sqnr_db if r.pre_qdq_sqnr_db is not None else r.sqnr_db
            lines.append(f"| `{r.tensor}` | {r.op_type} | `{r.node}` | {worst_in:.1f} | {out_db:.1f} | "
                         f"{r.sqnr_db:.1f} | {local:.1f} |")
    return lines + [""]


def local_drops(qm: onnx.ModelProto, layers) -> list[tuple[float, float, object]]:
    """(SQNR of the noise the node adds alone, worst input SQNR, row), worst first.

    Noise powers relative to the signal add (independent noise): 10^(-out/10) - 10^(-in/10) is what the
    node (with its weights and its own Q/DQ) adds. Inputs are read as the node reads them (a DQ output maps
    back to the tensor it dequantizes); constants (weights and their Q/DQ) are part of the node.
    """
    rows = {r.tensor: r for r in layers if r.role != "weight"}
    const = {t.name for t in qm.graph.initializer}
    for n in qm.graph.node:
        if n.op_type == "Constant" or all(i in const for i in n.input if i):
            const.update(n.output)
    q_src = {n.output[0]: n.input[0] for n in qm.graph.node if n.op_type == "QuantizeLinear"}
    dq_src = {n.output[0]: q_src[n.input[0]] for n in qm.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in q_src}
    producer = {o: n for n in qm.graph.node for o in n.output}
    out = []
    for name, r in rows.items():
        node = producer.get(name)
        inputs = [dq_src.get(i, i) for i in (node.input if node is not None else []) if i and i not in const]
        if not inputs or any(i not in rows for i in inputs):
            continue
        worst_in = min(rows[i].sqnr_db for i in inputs)
        added = 10 ** (-r.sqnr_db / 10) - 10 ** (-worst_in / 10)
        if added > 0:
            out.append((-10 * np.log10(added), worst_in, r))
    return sorted(out, key=lambda x: x[0])


# ------------------------------------------------------------------------------------------ rendering

def _value(row: Row | None, spec: ModelSpec) -> str:
    if row is None:
        return "-"
    return f"failed: {row.error}" if row.error else spec.cell(row.result)


def _modes(pair: list[Row | None], spec: ModelSpec) -> str:
    return f"opt: {_value(pair[0], spec)}; exact: {_value(pair[1], spec)}"


def summary_table(rows: list[Row]) -> list[str]:
    lines = ["| model | metric | float | ORT default | ORT TRT-style (exact) | onnxq defaults: auto (exact) | "
             "onnxq TensorRT, best method (exact) | onnxq ORT-CPU | target | onnxq met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, spec in SPECS.items():
        mine = [r for r in rows if r.model == key]
        if not mine:
            continue
        pick = {(r.quantizer, r.eval_mode): r for r in mine}
        flt = pick.get(("float", "optimized"))
        trt = [r for r in mine if r.quantizer == "onnxq TensorRT" and r.result]
        # best: a method meeting every part of the target if any (then by the main metric)
        ok = (lambda r: spec.met(r.result, flt.result)) if flt is not None and flt.result else (lambda r: False)
        best = max(trt, key=lambda r: (ok(r), spec.rank(r.result))) if trt else None
        cpu = [pick.get(("onnxq ORT-CPU", m)) for m in ("optimized", "exact")]
        ortd = [pick.get(("onnxruntime default", m)) for m in ("optimized", "exact")]
        auto = next((r for r in mine if r.quantizer == DEFAULTS), None)
        met = []
        if flt is not None and flt.result:
            if auto is not None and auto.result:
                met.append(f"defaults: {'yes' if spec.met(auto.result, flt.result) else 'NO'}")
            if best is not None:
                met.append(f"TRT {best.method}: {'yes' if spec.met(best.result, flt.result) else 'NO'}")
            if cpu[0] is not None and cpu[0].result:
                met.append(f"ORT-CPU: {'yes' if spec.met(cpu[0].result, flt.result) else 'NO'}")
        best_cell = f"{_value(best, spec)} ({best.method})" if best else "-"
        lines.append(f"| {spec.title} | {spec.metric_name} | {_value(flt, spec)} | {_modes(ortd, spec)} | "
                     f"{_value(pick.get(('onnxruntime TRT-style', 'exact')), spec)} | "
                     f"{_value(auto, spec) + (f' ({auto.method})' if auto is not None else '')} | {best_cell} | {_modes(cpu, spec)} | {spec.target} | "
                     f"{'; '.join(met)} |")
    return lines


def detail_table(rows: list[Row]) -> list[str]:
    lines = ["| model | quantizer | method | eval | main metric | all metrics | quantize s | eval s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spec = SPECS[r.model]
        extra = ", ".join(f"{k} {v:.4g}" for k, v in r.result.items())
        lines.append(f"| {spec.title} | {r.quantizer} | {r.method} | {r.eval_mode} | {_value(r, spec)} | "
                     f"{extra} | {r.quantize_s:.1f} | {r.eval_s:.1f} |")
    return lines


def _duration(rows: list[Row], total_s: float) -> str:
    """Wall time of this invocation, or of the quantize + evaluate steps when rows come from --from-json."""
    steps = sum(r.eval_s for r in rows) + sum({(r.model, r.quantizer, r.method): r.quantize_s for r in rows}.values())
    return f"{total_s / 60:.0f} min" if total_s >= steps else f"{steps / 60:.0f} min of quantization and evaluation"


def render(rows: list[Row], blames: list[str], args: argparse.Namespace, total_s: float) -> str:
    scope = "full evaluation sets" if args.limit is None else f"evaluation limited to {args.limit} samples"
    lines = [
        "# Accuracy: onnxq and onnxruntime's quantizer on the real benchmark models", "",
        f"Generated by `python benchmarks/accuracy.py` ({scope}, {_duration(rows, total_s)}); {args.provenance}. "
        "Calibration: each recipe's full calibration "
        "split (`calib_feeds()`); onnxq's four TensorRT methods solve from one collection of statistics.",
        "",
        "Evaluation: TensorRT-form models (int8 symmetric activations) run as exact fake quantization "
        "(`ONNXQ_EVAL_OPT=exact`, onnxruntime graph optimizations off: what TensorRT computes); ORT-CPU-form "
        "models are shown with onnxruntime's default optimizations (how they are deployed) and exactly. "
        "For exact runs the Q/DQ nodes on constants (weights) are first replaced by their values, computed by "
        "onnxruntime's own Q/DQ kernels (with optimizations off onnxruntime re-quantizes every weight on every "
        "run: 1.5 s per MiniLM sentence); outputs then differ from the unfolded model only by the summation "
        "order of onnxruntime's pre-packed GEMM for constant weights. "
        "\"ORT TRT-style\" = `quantize_static(QDQ, MinMax, per_channel=True, QInt8/QInt8, "
        "ActivationSymmetric=True, QuantizeBias=False)`; \"ORT default\" = `quantize_static(model, out, reader)` "
        f"(onnxruntime {ort.__version__} defaults: QDQ, MinMax, per-tensor, QInt8 activations and weights).",
        "", "## Against the targets", "", *summary_table(rows), "",
        "## Every method", "", *detail_table(rows), "",
    ]
    if blames:
        lines += ["## Missed targets: layers to blame (`onnxq compare --per-layer`)", "",
                  "Worst tensors first. \"before own Q/DQ\" is the SQNR of the tensor just before its own "
                  "quantization: a large drop from it to the SQNR column means its own range (scale) hurts; "
                  "a low value in both means the error arrives from upstream.", "", *blames]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(SPECS), default=list(SPECS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--ort-cpu-method", choices=ONNXQ_METHODS + ("auto",), default="entropy")
    p.add_argument("--equalize", action="store_true",
                   help="also every TensorRT method with --equalize (rows 'onnxq TensorRT +equalize')")
    p.add_argument("--limit", type=int, help="evaluate on the first N samples only (recipes that support it)")
    p.add_argument("--out", type=Path, help="markdown output (default benchmarks/results/accuracy.md for a full "
                                            "run; a subset or --limit run writes only when given)")
    p.add_argument("--work", type=Path, default=REPO / "models" / ".cache" / "accuracy",
                   help="where the quantized models are kept (default models/.cache/accuracy, git-ignored)")
    p.add_argument("--blame-samples", type=int, default=16, help="eval samples for per-layer blame (0 = off)")
    p.add_argument("--blame-top", type=int, default=12, help="layers listed per missed target")
    p.add_argument("--from-json", type=Path, help="re-render (and re-blame) the rows of a previous run's .json "
                                                  "instead of quantizing and evaluating again")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    args.work.mkdir(parents=True, exist_ok=True)
    full = args.limit is None and set(args.models) == set(SPECS) and set(args.methods) == set(METHODS)
    out = args.out or (REPO / "benchmarks" / "results" / "accuracy.md" if full else None)
    start = time.perf_counter()
    args.provenance = provenance()  # the code as it was when the run started (the run takes an hour)
    rows: list[Row] = []
    blames: list[str] = []
    previous = [Row(**d) for d in json.loads(args.from_json.read_text())] if args.from_json else None
    for key in args.models:
        mine = [r for r in previous if r.model == key] if previous is not None else run_model(key, args, args.work)
        rows += mine
        for row in missed_rows(key, mine) if args.blame_samples > 0 else []:
            try:
                blames += blame(key, row, args.blame_samples, args.blame_top)
            except Exception as exc:
                log.warning("per-layer blame of %s %s failed: %s", key, row.quantizer, _one_line(exc))
    text = render(rows, blames, args, time.perf_counter() - start)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(
            [r.__dict__ for r in rows], indent=1, sort_keys=True, default=str))
        log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
