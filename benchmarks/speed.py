"""Latency of quantized models on onnxruntime CPU at batch 1, side by side with the float model.

    python benchmarks/speed.py [--model efficientnet_lite0] [--runs 200]
    python benchmarks/speed.py --dynamic [--model minilm_l6_v2]

Quantizes the model with onnxq (ort-cpu and tensorrt targets) and with onnxruntime's quantize_static
(QDQ, uint8 activations, int8 per-channel weights: its fast x86 form), then times each file in the same
process, interleaving rounds so drift hits all of them alike. Prints a markdown table and writes
benchmarks/results/speed.md. With ``--dynamic``: onnxq ``--mode dynamic`` (its defaults) against
onnxruntime's quantize_dynamic (int8 weights, per tensor as its default and per channel) and the float
model, written to benchmarks/results/dynamic_speed.md; no calibration data is used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "models")]

import onnxq  # noqa: E402
from benchmarks.provenance import provenance  # noqa: E402
from onnxq.api import quantize  # noqa: E402
from onnxq.config import ActivationSpec, QuantConfig  # noqa: E402


def ort_quantize(float_path: Path, feeds: list[dict], out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(float_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def ort_quantize_dynamic(float_path: Path, out: Path, per_channel: bool) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(float_path), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
    return out


def dynamic_paths(float_path: Path, tmp: Path) -> dict[str, Path]:
    """The files --dynamic compares: float, onnxq's dynamic mode, onnxruntime's quantize_dynamic."""
    paths = {"float": float_path}
    cfg = QuantConfig(target="ort-cpu", mode="dynamic")
    paths["onnxq --mode dynamic"] = quantize(float_path, None, cfg).save(tmp / "onnxq_dynamic.onnx")
    paths["onnxruntime quantize_dynamic (per tensor, its default)"] = ort_quantize_dynamic(
        float_path, tmp / "ort_dynamic.onnx", per_channel=False)
    paths["onnxruntime quantize_dynamic per_channel"] = ort_quantize_dynamic(
        float_path, tmp / "ort_dynamic_pc.onnx", per_channel=True)
    return paths


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_models(paths: dict[str, Path], feed: dict, runs: int, threads: int) -> dict[str, float | str]:
    """Median ms per run of each model; a model onnxruntime cannot load gets its error line instead (the
    onnxruntime quantizer writes invalid models below opset 13: per-axis DequantizeLinear)."""
    sessions, failed = {}, {}
    for k, p in paths.items():
        try:
            sessions[k] = session(p, threads)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            failed[k] = "invalid model: " + " ".join(str(exc).split()).split(" Error ")[-1][:120]
    for s in sessions.values():
        for _ in range(10):
            s.run(None, feed)
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs // 10):
        for k, s in sessions.items():
            t = time.perf_counter()
            for _ in range(10):
                s.run(None, feed)
            samples[k].append((time.perf_counter() - t) / 10 * 1000)
    return {k: failed[k] if k in failed else statistics.median(samples[k]) for k in paths}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="recipe key (default efficientnet_lite0; MiniLM with --dynamic)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--dynamic", action="store_true", help="compare dynamic quantization (default model: MiniLM)")
    args = ap.parse_args()
    model = args.model or ("minilm_l6_v2" if args.dynamic else "efficientnet_lite0")
    recipe = __import__(model)
    float_path = recipe.build()
    tmp = Path(tempfile.mkdtemp(prefix="onnxq-speed-"))
    if args.dynamic:
        feed = next(iter(recipe.eval_feeds(limit=1)))  # the timed input only: nothing is calibrated
        paths = dynamic_paths(float_path, tmp)
    else:
        feeds = list(recipe.calib_feeds(limit=args.calib))
        feed = feeds[0]
        paths = {"float": float_path}
        for target in ("ort-cpu", "tensorrt"):
            cfg = QuantConfig(target=target, activations=ActivationSpec(method="minmax"))
            paths[f"onnxq {target}"] = quantize(float_path, feeds, cfg).save(tmp / f"{target}.onnx")
        ort_quantize(float_path, feeds, tmp / "ort.onnx")
        paths["onnxruntime quantize_static (U8S8 QDQ)"] = tmp / "ort.onnx"
    ms = time_models(paths, feed, args.runs, args.threads)
    lines = [
        f"{model}, batch 1, onnxruntime {ort.__version__} CPU, {args.threads} thread(s), "
        f"median of {args.runs // 10} rounds of 10 runs, onnxq {onnxq.__version__}; {provenance()}",
        "",
        "| model file | ms per image | speed-up vs float |",
        "|---|---|---|",
    ]
    for k, v in ms.items():
        lines.append(f"| {k} | {v} | - |" if isinstance(v, str) else f"| {k} | {v:.2f} | {ms['float'] / v:.2f}x |")
    text = "\n".join(lines)
    print(text)
    name = "dynamic_speed" if args.dynamic else "speed"
    default = "minilm_l6_v2" if args.dynamic else "efficientnet_lite0"
    out = ROOT / "benchmarks" / "results" / (f"{name}.md" if model == default else f"{name}_{model}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
