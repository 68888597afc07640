"""Sensitivity analysis and automatic float fallback on the real benchmark models.

``--timing``: full sensitivity of EfficientNet-Lite0 (every quantized node: 49 Conv, the Gemm and the 9
residual Adds; one at a time AND leave one out, 2 x 59 + 1 configurations) on the first 100 evaluation
images, default quantization config, with ``onnxq.analysis.sensitivity`` defaults (gated model, prefixes
cached at 8 cuts, 2 parallel workers), as ``onnxq sensitivity`` runs it. Wall and CPU time of the
calibration and of the analysis are reported with the 1-minute load average (the machine is shared: a
load above its 2 cores inflates wall time more than CPU time).

``--fallback KEY ...``: for each model, ``onnxq.api.quantize_with_fallback`` with the model's metric script
from ``examples/metrics/`` and a maximum metric drop derived from the benchmark target (float minus target,
or the drop stated in ``CASES``; halved when searching on a held-out split), at most 10 % of the
Conv/Gemm/MatMul nodes in float; then the written model is evaluated by the recipe's own evaluator
(``models/<key>.py``) on the full evaluation split, as exact fake quantization (``ONNXQ_EVAL_OPT=exact``),
and the share of Conv/Gemm/MatMul/ConvTranspose nodes still quantized is counted.

``--search calib`` (the default) searches on each recipe's calibration split, which is disjoint from the
evaluation split the target is measured on (the metric scripts score it with ``ONNXQ_METRIC_SPLIT=calib``;
MiniLM searches on sts-train pairs): the decisions are not tuned on the images that judge them.
``--search eval`` searches on the evaluation split itself (optimistic: selection on the test set).
``--baseline`` also writes and evaluates the fully quantized model (same config, no fallback) on the full
evaluation split, for the "all quantized" column.

``--probe KEY ...``: the all-quantized metric of every calibration method (one statistics collection),
to choose the method a model's fallback starts from.

Usage:
    python benchmarks/sensitivity.py --timing
    python benchmarks/sensitivity.py --fallback efficientnet_lite0 yolox_nano minilm_l6_v2 ppocr_det ppocr_cls
    python benchmarks/sensitivity.py --probe ppocr_cls
Results are printed as markdown and appended to benchmarks/results/sensitivity.md (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing; `models` is a namespace package

import onnx  # noqa: E402

from benchmarks.provenance import provenance  # noqa: E402
from onnxq import api  # noqa: E402
from onnxq.analysis.sensitivity import GatedEvaluator, SensitivityOptions, quant_form, sensitivity  # noqa: E402
from onnxq.calibrate.solve import solve  # noqa: E402
from onnxq.cli.scripts import load_metric_script  # noqa: E402
from onnxq.collect.collectors import collect  # noqa: E402
from onnxq.config import ActivationSpec, FallbackRule, QuantConfig  # noqa: E402
from onnxq.graph.ops import WEIGHTED  # noqa: E402
from onnxq.placement import plan  # noqa: E402
from onnxq.records import QuantPlan  # noqa: E402
from onnxq.report.sensitivity_render import fallback_text  # noqa: E402
from onnxq.rewrite.gates import build_gated  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    """How one model's fallback runs: start method, metric script, samples searched, target."""

    method: str
    script: str
    key_metric: str  # the recipe evaluator's key for the target
    target: float
    search_limit: int | None  # evaluation feeds searched (None: the whole split)
    drop: float | None = None  # allowed drop on the full evaluation split (None: float - target)
    calib_limit: int | None = None


FLOAT = {  # float metric of each recipe on its full evaluation split (models/README.md, BENCHMARKS.md)
    "efficientnet_lite0": 100.0,  # agreement with itself (top-1 87.75)
    "yolox_nano": 33.88,
    "minilm_l6_v2": 82.03,
    "ppocr_det": 87.52,
    "ppocr_cls": 93.40,
}
SEARCH_MARGIN = 0.5  # held-out search: stop at half the allowed drop, a margin for the gap between splits

CASES = {
    "efficientnet_lite0": Case("minmax", "efficientnet_agreement.py", "agreement", 98.5, 400),
    "yolox_nano": Case("entropy", "yolox_map.py", "map", 32.88, None, drop=1.0),  # issue 5: drop <= 1.0
    "minilm_l6_v2": Case("minmax", "minilm_spearman.py", "spearman", 81.0, 200, drop=1.0),
    "ppocr_det": Case("entropy", "ppocr_det_hmean.py", "hmean", 86.5, None),
    "ppocr_cls": Case("percentile", "ppocr_cls_accuracy.py", "accuracy", 93.0, None),  # --probe, calib split
}


def recipe(key: str):
    return importlib.import_module(f"models.{key}")


def load() -> float:
    return os.getloadavg()[0]


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def timing(eval_images: int = 100) -> list[str]:
    m = recipe("efficientnet_lite0")
    pre, _ = api.prepare(m.build())
    config = QuantConfig()  # the defaults: minmax, bias correction on
    qplan = plan(pre, config)
    calib = list(m.calib_feeds(limit=100))
    feeds = list(m.eval_feeds(limit=eval_images))
    start_load = load()

    def calibrate():
        stats, _ = collect(pre, qplan, api.as_source(calib, pre), config)
        params = solve(stats, qplan, config)
        return params, quant_form(pre, qplan, params, config, calib)

    (params, form), cal_w, cal_c = timed(calibrate)
    (report, _), w, c = timed(lambda: sensitivity(pre, qplan, params, feeds, SensitivityOptions(), form=form,
                                                  progress=True))
    units = len(report.layers)
    lines = [
        f"### Full sensitivity, EfficientNet-Lite0 ({provenance()})", "",
        (f"{units} units ({', '.join(f'{op} x{n}' for op, n in _ops(report))}), {report.evaluations} "
         f"configurations (all quantized, {units} one at a time, {units} leave one out) x {eval_images} images "
         f"= {report.evaluations * eval_images} inferences; default config (minmax, bias correction)."), "",
        "| step | wall s | CPU s | load (1 min) at start / end |", "|---|---:|---:|---|",
        f"| calibration + bias correction (100 images) | {cal_w:.1f} | {cal_c:.1f} | {start_load:.1f} |",
        f"| sensitivity ({report.timings}) | {w:.1f} | {c:.1f} | {start_load:.1f} / {load():.1f} |", "",
        "Most sensitive (leave-one-out gain in output SQNR, dB):", "",
        "| layer | op | gain dB | SQNR only this quantized |", "|---|---|---:|---:|",
    ]
    lines += [f"| {l.node} | {l.op_type} | {l.gain:+.3f} | {l.only.sqnr_db:.2f} |" for l in report.layers[:8]]
    lines += ["", f"All quantized: output SQNR {report.all_quantized.sqnr_db:.2f} dB.", ""]
    return lines


def _ops(report):
    counts: dict[str, int] = {}
    for layer in report.layers:
        counts[layer.op_type] = counts.get(layer.op_type, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def _weighted_share(model: onnx.ModelProto, final_plan) -> tuple[int, int]:
    weighted = [n.name for n in model.graph.node if n.op_type in WEIGHTED]
    quantized = set(final_plan.quantized_nodes)
    return sum(1 for n in weighted if n in quantized), len(weighted)


def _search_feeds(key: str, m, case: Case, split: str = "eval") -> list:
    """The feeds searched, from ``split`` ("eval" or "calib"), in the order the metric scripts expect.

    MiniLM's ``limit`` counts sentences (two feeds per pair); its "calib" split is the sts-train pairs
    (its calibration sentences are the first of them)."""
    limit = case.search_limit
    if key == "minilm_l6_v2":
        limit = None if limit is None else limit // 2
        if split == "calib":
            tok = m.tokenizer()
            pairs = m.read_sts(m.common.data_path(None, "stsb", "sts-train.csv"))[:limit]
            return [m.encode(tok, text) for _, a, b in pairs for text in (a, b)]
    feeds = m.calib_feeds if split == "calib" else m.eval_feeds
    return list(feeds(limit=limit))


def _evaluate(m, case: Case, model: Path, float_model: Path) -> dict:
    """The recipe's evaluation on its full evaluation split, exact fake quantization."""
    os.environ["ONNXQ_EVAL_OPT"] = "exact"
    return m.evaluate(model, float_model=float_model if case.key_metric == "agreement" else None)


def fallback(key: str, split: str = "calib", baseline: bool = False, select: str = "rule",
             equalize: bool = False, method: str | None = None) -> list[str]:
    case = CASES[key] if method is None else dataclasses.replace(CASES[key], method=method)
    m = recipe(key)
    path = m.build()
    os.environ["ONNXQ_METRIC_SPLIT"] = split  # the metric scripts score against this split's labels
    metric = load_metric_script(REPO / "examples" / "metrics" / case.script)
    calib = list(m.calib_feeds(limit=case.calib_limit))
    search = _search_feeds(key, m, case, split)
    config = QuantConfig(activations=ActivationSpec(method=case.method), equalize=equalize)
    pre, _ = api.prepare(path)
    pre = api.equalized(pre, config, api.as_source(calib, pre, config.batch_size))
    float_only = build_gated(pre, QuantPlan(config.target.value, (), (), ()), {})
    float_score = GatedEvaluator(float_only, search, metric=metric, workers=1).float_metric
    if split == "eval":  # the search samples are (part of) the evaluation split: the target itself
        drop = case.drop if case.drop is not None else float_score - case.target
    else:  # held out: the same drop, relative to the float score on the search split, with a margin
        drop = SEARCH_MARGIN * (case.drop if case.drop is not None else FLOAT[key] - case.target)
    rule = FallbackRule(max_metric_drop=drop, select=select)
    start_load = load()
    (result, fb, _ranking), w, c = timed(lambda: api.quantize_with_fallback(
        path, calib, config, rule, eval_data=search, metric=metric, progress=True))
    float_full = f"{FLOAT[key]:.2f}"
    all_q = None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{key}.onnx"
        result.save(out)
        final = _evaluate(m, case, out, path)
        if baseline:
            plain = Path(tmp) / f"{key}.all.onnx"
            api.quantize(path, calib, config).save(plain)
            all_q = _evaluate(m, case, plain, path)
    kept, total = _weighted_share(pre, result.plan)
    met = final[case.key_metric] >= case.target and kept >= 0.9 * total
    print(fallback_text(fb))
    all_text = f"{all_q[case.key_metric]:.2f}" if all_q else "-"
    return [
        (f"| {key} | {case.key_metric} | {float_full} | {all_text} | {final[case.key_metric]:.2f} "
         f"(target {case.target}) | {total - kept} / {total} ({len(fb.steps)} fallback steps) | "
         f"{100 * kept / total:.1f} % | {'yes' if met else 'NO'} | {w:.0f} / {c:.0f} "
         f"({start_load:.1f}) | {case.method} | {split} x {len(search)} | {float_score:.2f} / "
         f"{fb.start.metric:.2f} / {fb.verified.metric:.2f} (max drop {drop:.2f}, select {select}"
        f"{', equalize' if equalize else ''}) |"),
        json.dumps({"key": key, "search": split, "select": select, "float_nodes": list(fb.float_nodes),
                    "bought": [round(s.bought, 3) for s in fb.steps], "final": final, "all_quantized": all_q}),
    ]


def probe(key: str, split: str = "calib", equalize: bool = False) -> list[str]:
    case = CASES[key]
    m = recipe(key)
    os.environ["ONNXQ_METRIC_SPLIT"] = split
    metric = load_metric_script(REPO / "examples" / "metrics" / case.script)
    pre, _ = api.prepare(m.build())
    config = QuantConfig(activations=ActivationSpec(method="entropy"), equalize=equalize)
    source = api.as_source(list(m.calib_feeds(limit=case.calib_limit)), pre)
    pre = api.equalized(pre, config, source)
    qplan = plan(pre, config)
    stats, _ = collect(pre, qplan, source, config, histograms=True)
    search = _search_feeds(key, m, case, split)
    lines = []
    for method in ("minmax", "entropy", "mse", "percentile"):
        cfg = dataclasses.replace(config, activations=ActivationSpec(method=method))
        ev = GatedEvaluator(build_gated(pre, qplan, solve(stats, qplan, cfg)), search, metric=metric)
        s = ev.score(ev.units)
        lines.append(f"| {key} ({split} split) | {method} | {ev.float_metric:.2f} | {s.metric:.2f} | {s.sqnr_db:.2f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timing", action="store_true")
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--fallback", nargs="*", default=[], choices=list(CASES))
    p.add_argument("--search", choices=["calib", "eval"], default="calib",
                   help="split the fallback searches on (default: calibration, disjoint from the evaluation)")
    p.add_argument("--select", choices=["rule", "sqnr"], default="rule",
                   help="choose each fallback step by the metric (rule) or by output SQNR")
    p.add_argument("--baseline", action="store_true", help="also evaluate the fully quantized model")
    p.add_argument("--equalize", action="store_true", help="quantize with depthwise input equalization")
    p.add_argument("--method", choices=["minmax", "entropy", "mse", "percentile"],
                   help="start method (default: each model's in CASES)")
    p.add_argument("--probe", nargs="*", default=[], choices=list(CASES))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sensitivity.md")
    args = p.parse_args()
    lines: list[str] = []
    if args.timing:
        lines += timing(args.eval_images)
    if args.fallback:
        lines += [f"### Automatic fallback ({provenance()}; search on the {args.search} split)", "",
                  ("| model | metric | float (full eval) | all quantized (full eval, exact) | after fallback (full "
                   "eval, exact) | Conv/Gemm/MatMul in float / total | % quantized | target met | wall / CPU s "
                   "(load) | start method | search split x samples | search: float / all quantized / final "
                   "(written model, exact) |"), "|" + "---|" * 12]
        details = []
        for key in args.fallback:
            row, detail = fallback(key, args.search, args.baseline, args.select, args.equalize, args.method)
            lines.append(row)
            details.append(detail)
            print(row, flush=True)
        lines += ["", "```", *details, "```", ""]
    if args.probe:
        lines += ["| model | method | float metric | all quantized metric | output SQNR dB |", "|---|---|---:|---:|---:|"]
        for key in args.probe:
            lines += probe(key, args.search, args.equalize)
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
