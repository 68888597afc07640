"""Accuracy mechanisms on real models: calibration method x mechanism -> agreement, top-1, logit MSE.

Every quantized model is evaluated exactly (onnxruntime, graph optimizations disabled: what TensorRT
computes for the Q/DQ graph) against the float model on the recipe's evaluation set. Mechanisms:

* ``base``: the plan solved with the method, nothing else;
* ``bc``: bias correction of weight quantization (``onnxq.rewrite.bias_correction.correct_biases`` with
  input moments of the float model on the calibration data);
* ``bc-act``: bias correction of weight *and* input-activation quantization (input moments of the
  fake-quantized inputs too; one data pass per method, since they depend on the activation scales);
* ``guard``: a range whose expected squared quantization error (from the histogram) exceeds
  ``--guard-ratio`` times the minimum over all thresholds is replaced by the MSE-optimal one (catches
  entropy clipping a saturated ReLU6 at 3.4 of 6, for instance);
* ``guard+bc``: both.

Histograms are collected once (``onnxq.api.calibrate``) and every method solves from them; input moments
for ``bc`` are collected once (a separate pass over the calibration data).

Usage (repo root):
    python benchmarks/accuracy_experiments.py --model efficientnet_lite0
    python benchmarks/accuracy_experiments.py --model ppocr_cls --methods entropy percentile \
        --mechanisms base bc guard+bc --out /tmp/ppocr.md
Options --cache DIR keeps preprocessed feeds, statistics and float outputs between runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing; `models` is a namespace package

import numpy as np  # noqa: E402

from onnxq import api, runtime  # noqa: E402
from onnxq.analysis.activation_means import correctable_nodes, input_moments, input_quantizers  # noqa: E402
from onnxq.calibrate.mse import amax_mse, mse_errors  # noqa: E402
from onnxq.calibrate.params import symmetric_scale  # noqa: E402
from onnxq.calibrate.solve import solve  # noqa: E402
from onnxq.collect.stats_file import load_stats, save_stats  # noqa: E402
from onnxq.config import ActivationSpec, QuantConfig  # noqa: E402
from onnxq.placement import plan  # noqa: E402
from onnxq.records import QuantParams  # noqa: E402
from onnxq.rewrite import insert_qdq  # noqa: E402
from onnxq.rewrite.bias_correction import correct_biases  # noqa: E402

METHODS = ("minmax", "entropy", "percentile", "mse")
MECHANISMS = ("base", "bc", "bc-act", "guard", "guard+bc")
BATCH = 25


# ---------------------------------------------------------------------------------------------- data
def _stack(feeds, batch: int) -> list[dict[str, np.ndarray]]:
    feeds = list(feeds)
    names = list(feeds[0])
    out = []
    for i in range(0, len(feeds), batch):
        out.append({n: np.concatenate([f[n] for f in feeds[i:i + batch]]) for n in names})
    return out


def load_data(recipe, cache: Path | None, calib_limit: int | None):
    """(calib batches, eval batches, eval labels), from ``cache/feeds.npz`` when there."""
    path = cache / f"{recipe.KEY}_feeds.npz" if cache else None
    if path is not None and path.exists():
        z = np.load(path, allow_pickle=False)
        calib, evals, labels = z["calib"], z["eval"], z["labels"]
    else:
        calib = np.concatenate([f[recipe.INPUT] for f in recipe.calib_feeds()])
        evals = np.concatenate([f[recipe.INPUT] for f in recipe.eval_feeds()])
        labels = recipe.eval_labels()
        if path is not None:
            np.savez(path, calib=calib, eval=evals, labels=labels)
    calib = calib[:calib_limit]
    split = lambda x: [{recipe.INPUT: x[i:i + BATCH]} for i in range(0, len(x), BATCH)]  # noqa: E731
    return split(calib), split(evals), labels


def first_output(model, batches) -> np.ndarray:
    session = runtime.make_session(model, optimize=False)
    return np.concatenate([runtime.run(session, b)[0] for b in batches])


# ------------------------------------------------------------------------------------------ mechanisms
def guarded(params: dict, qplan, stats, ratio: float) -> tuple[dict, int]:
    """Replace ranges whose histogram MSE exceeds ``ratio`` x the optimum by the MSE range (ungrouped)."""
    params = dict(params)
    changed = 0
    for spec in qplan.activations():
        s = stats[spec.tensor]
        if spec.group or not spec.symmetric or s.count == 0 or not s.has_histogram:
            continue
        h = s.abs_hist
        best = min(amax_mse(h), s.absmax)
        errors = mse_errors(h.counts, np.array([params[spec.key].hi, best]) / h.width - 0.5)
        if errors[0] > ratio * errors[1]:
            scale = np.asarray(np.float32(symmetric_scale(best)))
            params[spec.key] = QuantParams(scale, np.zeros((), np.int8), None, spec.dtype, -best, best)
            changed += 1
    return params, changed


def variant(name: str, model, qplan, params, stats, moments, calib, ratio: float):
    """The quantized model of one mechanism and a note (what it changed)."""
    note = ""
    if name.startswith("guard"):
        params, n = guarded(params, qplan, stats, ratio)
        note = f"{n} ranges guarded"
    if name.endswith("bc-act"):
        t = time.perf_counter()
        acts = input_moments(model, correctable_nodes(model), calib, input_quantizers(qplan, params))
        note = f"moments {time.perf_counter() - t:.0f}s"
        model = correct_biases(model, qplan, params, acts)
    elif name.endswith("bc"):
        model = correct_biases(model, qplan, params, moments)
    return insert_qdq(model, qplan, params), note


def scores(out: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "agreement": 100.0 * float(np.mean(out.argmax(-1) == ref.argmax(-1))),
        "top1": 100.0 * float(np.mean(out.argmax(-1) == labels)),
        "mse": float(np.mean((out.astype(np.float64) - ref) ** 2)),
    }


# ------------------------------------------------------------------------------------------------ main
def prepare_all(args):
    recipe = importlib.import_module(f"models.{args.model}")
    path = recipe.build()
    model, _ = api.prepare(path)
    cache = Path(args.cache) if args.cache else None
    calib, evals, labels = load_data(recipe, cache, args.calib_limit)
    hist_config = QuantConfig(activations=ActivationSpec(method="entropy"))
    stats_path = cache / f"{args.model}_stats.npz" if cache else None
    if stats_path is not None and stats_path.exists():
        stats, _ = load_stats(stats_path)
    else:
        stats = api.calibrate(model, calib, hist_config).stats
        if stats_path is not None:
            save_stats(stats_path, stats)
    ref = first_output(model, evals)
    t = time.perf_counter()
    moments = input_moments(model, correctable_nodes(model), calib)
    print(f"# input moments of {len(moments)} nodes: {time.perf_counter() - t:.1f}s", flush=True)
    return model, calib, evals, labels, stats, ref, moments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--weight-methods", nargs="+", default=["max"], choices=["max", "mse"])
    parser.add_argument("--mechanisms", nargs="+", default=["base", "bc", "guard", "guard+bc"],
                        choices=MECHANISMS)
    parser.add_argument("--guard-ratio", type=float, default=2.0)
    parser.add_argument("--calib-limit", type=int, default=None)
    parser.add_argument("--cache", default=None, help="folder for preprocessed feeds and statistics")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    model, calib, evals, labels, stats, ref, moments = prepare_all(args)
    ref_scores = scores(ref, ref, labels)
    lines = [f"Model {args.model}: float top-1 {ref_scores['top1']:.2f} %, {len(labels)} eval samples, "
             f"{sum(len(next(iter(b.values()))) for b in calib)} calibration samples; exact evaluation.", "",
             "| weights | activations | mechanism | agreement % | top-1 % | logit MSE | note |",
             "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for wm in args.weight_methods:
        for method in args.methods:
            config = QuantConfig(activations=ActivationSpec(method=method), weights={"method": wm})
            qplan = plan(model, config)
            params = solve(stats, qplan, config)
            for mech in args.mechanisms:
                qmodel, note = variant(mech, model, qplan, params, stats, moments, calib, args.guard_ratio)
                s = scores(first_output(qmodel, evals), ref, labels)
                line = (f"| {wm} | {method} | {mech} | {s['agreement']:.2f} | {s['top1']:.2f} | "
                        f"{s['mse']:.5f} | {note} |")
                print(line, flush=True)
                lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
