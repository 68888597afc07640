"""Does a held-out output score pick the calibration method the task metric would pick? (issue 14)

For each real benchmark model (models/.cache, recipes in models/):

1. take its first ``--feeds`` calibration feeds and split them with
   :func:`onnxq.analysis.heldout.split_feeds` (every k-th feed held out, about 20 %);
2. collect statistics once, with histograms and the bias-correction moments, on the range-estimation
   feeds (the same single run ``onnxq quantize`` makes);
3. for each candidate of :func:`onnxq.calibrate.choose.candidate_configs` (minmax, percentile, mse,
   entropy): solve, apply bias correction, write the Q/DQ model (TensorRT target: float weights -> Q -> DQ),
   run it and the float model on the held-out feeds with onnxruntime graph optimizations off (exact fake
   quantization; weight Q/DQ folded to their values first, as benchmarks/accuracy.py does: bit-identical),
   and score it (:func:`onnxq.analysis.heldout.output_scores`: whole-output SQNR and worst slice);
4. print per candidate the objective (worst slice SQNR over all outputs), each output's whole SQNR, which
   method the score picks, and the time (collection once; then solve + write, and scoring, per candidate);
5. beside it, the task metric per method measured in benchmarks/results/accuracy.json (TensorRT, exact,
   full evaluation sets, calibrated on each recipe's full calibration split), and for the models that file
   lacks (PP-OCRv6 rec, ViT saliency) the task metric of these very candidates on the first
   ``--eval-limit`` evaluation samples.

    python benchmarks/auto_method.py                       # all seven models; writes benchmarks/results/auto_method.md
    python benchmarks/auto_method.py --models yolox_nano --feeds 32 --out /tmp/a.md
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing; `models` is a namespace package

import numpy as np
import onnx

from benchmarks.accuracy import SPECS, eval_mode, freeze_constant_qdq
from benchmarks.provenance import provenance
from models.prepare import KEYS, recipe
from onnxq import api, io, runtime
from onnxq.analysis.activation_means import correction_nodes, moment_reducers
from onnxq.analysis.heldout import OutputScore, model_score, output_scores, ranking_key, split_feeds
from onnxq.calibrate.choose import candidate_configs
from onnxq.calibrate.solve import solve
from onnxq.collect.collectors import collect_all
from onnxq.collect.data import from_iterable
from onnxq.config import ActivationSpec, QuantConfig, Target, WeightFormat
from onnxq.graph.query import GraphIndex, import_graph
from onnxq.placement import plan
from onnxq.rewrite.bias_correction import apply_bias_shifts, output_shifts
from onnxq.rewrite.insert_qdq import export_model, insert_into

log = logging.getLogger("auto_method")

TITLES = {"efficientnet_lite0": "EfficientNet-Lite0", "yolox_nano": "YOLOX-Nano", "minilm_l6_v2": "MiniLM-L6-v2",
          "ppocr_det": "PP-OCRv4 det", "ppocr_cls": "PP-OCR cls", "ppocrv6_rec": "PP-OCRv6 rec",
          "vit_saliency": "ViT-S saliency"}
# task metric measured here for the models benchmarks/results/accuracy.json lacks: (key, what maximises)
OWN_METRIC = {"ppocrv6_rec": ("agreement", "agreement % with float (accuracy %)"),
              "vit_saliency": ("pearson", "Pearson r with float (IoU@0.5)")}


@dataclass
class Candidate:
    method: str
    scores: list[OutputScore]
    objective: float
    key: tuple[float, float]
    solve_write_s: float
    score_s: float
    metric: dict[str, float] = field(default_factory=dict)  # from accuracy.json or measured here
    metric_s: float = 0.0


@dataclass
class ModelRun:
    key: str
    feeds: int
    split: str
    collect_s: float
    reference_s: float
    candidates: list[Candidate]
    error: str = ""

    @property
    def chosen(self) -> Candidate | None:
        # max() keeps the first of equal keys: ties go to the earlier candidate, as auto does
        return max(self.candidates, key=lambda c: c.key) if self.candidates else None


# ------------------------------------------------------------------------------------------ one model

def run_outputs(model: onnx.ModelProto | str, feeds: list[dict]) -> list[list[np.ndarray]]:
    session = runtime.make_session(model, optimize=False)
    return [list(runtime.run(session, feed)) for feed in feeds]


def exact_model(qmodel: onnx.ModelProto, work: Path, name: str) -> Path:
    """``qmodel`` saved with its constant Q/DQ (weights) folded to their values by onnxruntime's kernels."""
    path = work / f"{name}.onnx"
    onnx.save(qmodel, str(path))
    return freeze_constant_qdq(path)


def run_model(key: str, n_feeds: int, eval_limit: int, work: Path) -> ModelRun:
    mod = recipe(key)
    float_path = Path(mod.build())
    feeds = list(mod.calib_feeds(None, n_feeds))
    split = split_feeds(len(feeds))
    estimation = [feeds[i] for i in split.estimation]
    held = [feeds[i] for i in split.scoring]

    t = time.perf_counter()
    config = QuantConfig(activations=ActivationSpec(method="entropy"))  # any method: histograms are kept
    pre, _ = api.prepare(float_path)
    index = GraphIndex.build(import_graph(pre))
    qplan = plan(index, config)
    reducers = moment_reducers(correction_nodes(index, qplan)) if config.weights.bias_correction else []
    collected = collect_all(pre, qplan, from_iterable(estimation), config, reducers=reducers, histograms=True)
    collect_s = time.perf_counter() - t

    t = time.perf_counter()
    float_model = io.load_model(float_path)
    names = [o.name for o in float_model.graph.output]
    reference = run_outputs(float_model, held)
    reference_s = time.perf_counter() - t
    log.info("%s: %s; collection %.1f s, float outputs %.1f s", key, split.describe(), collect_s, reference_s)

    candidates = []
    for method, cfg in candidate_configs(config):
        t = time.perf_counter()
        params = solve(collected.stats, qplan, cfg)
        graph = import_graph(pre)
        apply_bias_shifts(graph, output_shifts(index, qplan, params, collected.reduced), qplan)
        dq_only = cfg.weights.format is WeightFormat.DQ_ONLY or cfg.target is Target.ORT_CPU
        insert_into(graph, qplan, params, dq_only=dq_only)
        path = exact_model(export_model(graph, pre), work, f"{key}.{method}")
        solve_write_s = time.perf_counter() - t
        t = time.perf_counter()
        scores = output_scores(reference, run_outputs(str(path), held), names)
        score_s = time.perf_counter() - t
        cand = Candidate(method, scores, model_score(scores), ranking_key(scores), solve_write_s, score_s)
        if key in OWN_METRIC and eval_limit > 0:
            cand.metric, cand.metric_s = own_metric(mod, path, float_path, eval_limit)
        candidates.append(cand)
        log.info("%s %s: %.2f dB worst slice (%s); solve+write %.1f s, score %.1f s", key, method, cand.objective,
                 _worst(scores), solve_write_s, score_s)
    return ModelRun(key, len(feeds), split.describe(), collect_s, reference_s, candidates)


def own_metric(mod, path: Path, float_path: Path, limit: int) -> tuple[dict[str, float], float]:
    t = time.perf_counter()
    kwargs = {"float_model": float_path}
    if "limit" in inspect.signature(mod.evaluate).parameters:
        kwargs["limit"] = limit
    with eval_mode("exact"):
        result = {k: float(v) for k, v in mod.evaluate(path, **kwargs).items()}
    return result, time.perf_counter() - t


def recorded_metrics(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(model, method) -> result of the onnxq TensorRT exact rows of benchmarks/results/accuracy.json."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())
    return {(r["model"], r["method"]): r["result"] for r in rows
            if r["quantizer"] == "onnxq TensorRT" and r["eval_mode"] == "exact" and r["result"]}


# ------------------------------------------------------------------------------------------ rendering

def _worst(scores: list[OutputScore]) -> str:
    scored = [s for s in scores if s.scored]
    if not scored:
        return "nothing scored"
    s = min(scored, key=lambda s: s.worst_sqnr_db)
    dead = f" ({s.dead_slices} dead slices left out)" if s.dead_slices else ""
    return f"`{s.output}` {s.worst_slice_label or 'whole output'}{dead}"


def _metric_cell(key: str, c: Candidate) -> str:
    if not c.metric:
        return "-"
    if key in SPECS:
        return SPECS[key].cell(c.metric)
    if key == "ppocrv6_rec":
        return f"{c.metric['agreement']:.1f} ({c.metric['accuracy']:.1f})"
    return f"{c.metric['pearson']:.4f} ({c.metric['iou']:.3f})"


def _metric_rank(key: str, c: Candidate) -> float | None:
    if not c.metric:
        return None
    if key in SPECS:
        return SPECS[key].rank(c.metric)
    return c.metric[OWN_METRIC[key][0]]


def _metric_name(key: str) -> str:
    if key in SPECS:
        return f"{SPECS[key].metric_name}, accuracy.md"
    return f"{OWN_METRIC[key][1]}, measured here"


def model_lines(run: ModelRun) -> list[str]:
    title = TITLES[run.key]
    if run.error:
        return [f"| {title} | failed: {run.error} |" + " |" * 7]
    chosen = run.chosen
    ranks = {c.method: _metric_rank(run.key, c) for c in run.candidates}
    best_metric = max((v for v in ranks.values() if v is not None), default=None)
    lines = []
    for c in run.candidates:
        outs = "; ".join(f"`{s.output}` {s.sqnr_db:.1f}" if s.scored else f"`{s.output}` {s.note}" for s in c.scores)
        mark = " **chosen**" if c is chosen else ""
        best = " (best)" if best_metric is not None and ranks[c.method] == best_metric else ""
        lines.append(
            f"| {title} | {c.method}{mark} | {c.objective:.2f} | {_worst(c.scores)} | {outs} | "
            f"{_metric_cell(run.key, c)}{best} | {c.solve_write_s:.1f} | {c.score_s:.1f} |")
    return lines


def summary_lines(runs: list[ModelRun]) -> list[str]:
    lines = [("| model | split | collection s | float outputs s | chosen (score dB) | task-metric best | chosen by metric "
             "| metric |"), "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        if run.error or run.chosen is None:
            lines.append(f"| {TITLES[run.key]} | failed: {run.error} |" + " |" * 6)
            continue
        ranks = {c.method: _metric_rank(run.key, c) for c in run.candidates}
        known = {m: v for m, v in ranks.items() if v is not None}
        best = max(known, key=known.get) if known else None
        chosen = run.chosen
        verdict = "-"
        if best is not None and known.get(chosen.method) is not None:
            gap = known[best] - known[chosen.method]
            verdict = "the best" if gap == 0 else f"{gap:.2f} below the best"
        lines.append(
            f"| {TITLES[run.key]} | {run.split} | {run.collect_s:.1f} | {run.reference_s:.1f} | "
            f"{chosen.method} ({chosen.objective:.2f}) | {best or '-'} | {verdict} | {_metric_name(run.key)} |")
    return lines


def render(runs: list[ModelRun], args: argparse.Namespace, total_s: float) -> str:
    lines = [
        "# `--method auto` groundwork: does the held-out score pick the method the task metric picks?", "",
        f"Generated by `python benchmarks/{Path(__file__).name} {' '.join(args.argv)}`".rstrip() +
        f" ({total_s / 60:.1f} min on {args.cores}); {args.provenance}.", "",
        (f"Per model: the first {args.feeds} calibration feeds of its recipe (fewer when the split has fewer), "
        "split by `onnxq.analysis.heldout.split_feeds` (every k-th feed held out); statistics collected once "
        "(histograms and bias-correction moments) on the others; each method solved from them, bias-corrected, "
        "written (TensorRT target, weights float -> Q -> DQ) and run with the float model on the held-out feeds, "
        "onnxruntime graph optimizations off (exact fake quantization). Score = worst slice SQNR over all "
        "outputs (`model_score`; slices: channels of rank-4 outputs, last-axis features of rank-2/3 outputs); "
        "the chosen method maximises `ranking_key` (score to 0.1 dB, then the mean slice SQNR)."), "",
        ("The task metric column: for the five models of benchmarks/results/accuracy.md its onnxq TensorRT exact "
        "rows (full evaluation sets, calibrated on the recipe's *full* calibration split with all of it for "
        "bias correction, so not these exact models); for PP-OCRv6 rec and ViT-S saliency the metric of these "
        f"very candidates on the first {args.eval_limit} evaluation samples, exact."), "",
        "## Summary", "", *summary_lines(runs), "",
        "## Every candidate", "",
        ("| model | method | score dB (worst slice) | worst slice at | whole-output SQNR dB | task metric | "
        "solve+write s | score s |"), "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines += model_lines(run)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=KEYS, default=list(KEYS))
    p.add_argument("--feeds", type=int, default=64, help="calibration feeds per model (default 64)")
    p.add_argument("--eval-limit", type=int, default=100,
                   help="evaluation samples for the task metric of models accuracy.json lacks (0: skip)")
    p.add_argument("--out", type=Path, help="markdown output (default benchmarks/results/auto_method.md for all "
                                            "models)")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    out = args.out or (REPO / "benchmarks" / "results" / "auto_method.md" if set(args.models) == set(KEYS) else None)
    args.provenance = provenance()
    from onnxq.cores import usable_cores

    args.cores = f"{usable_cores()} cores"
    recorded = recorded_metrics(REPO / "benchmarks" / "results" / "accuracy.json")
    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models:
            try:
                run = run_model(key, args.feeds, args.eval_limit, Path(tmp))
            except Exception as exc:  # one model failing is a result, not the end of the run
                log.exception("%s failed", key)
                run = ModelRun(key, 0, "", 0.0, 0.0, [], error=f"{type(exc).__name__}: {exc}"[:200])
            for c in run.candidates:
                c.metric = c.metric or recorded.get((key, c.method), {})
            runs.append(run)
    text = render(runs, args, time.perf_counter() - start)
    print(text)
    if out is not None:
        out.write_text(text)
        log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
