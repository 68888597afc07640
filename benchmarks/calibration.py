"""Calibration cost: wall time and peak memory of onnxq against onnxruntime's quantizer, side by side.

On EfficientNet-Lite0 (``models/efficientnet_lite0.py``; built into models/.cache if missing), with the 100
preprocessed calibration images repeated as needed to 100 and 1000 samples (batch 1), one invocation runs:

* plain float inference (onnxruntime, default session options): the floor any calibrator has to pay;
* ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel, int8 activations and weights) with
  MinMax, Entropy and Percentile. Its histogram calibrators keep every intermediate tensor of every sample
  until the end (~63 MB per sample here), so at 1000 samples (~63 GB) they cannot run in 24 GB: those
  rows are skipped and marked so;
* ``onnxq.quantize`` (TensorRT target) with minmax, entropy, mse and percentile, end to end: preprocess,
  plan, collect (with the bias-correction means, in the same run), solve, rewrite, check, save, with
  default options: what ``onnxq quantize`` does.

Each configuration runs in its own process (this script with ``--one``); the parent reads the child's
peak RSS from ``os.wait4`` and the child reports its own wall time for the timed part (data loading
excluded: every configuration gets the same in-memory arrays). The 1-minute load average at the start
of each run is printed too: the machine is shared, and a load above the core count inflates wall times.
So every configuration runs ``--repeat`` times (default 3) in interleaved rounds and the table shows the
median and the spread. onnxq is compiled to bytecode first, as ``pip install`` does.

Usage:
    python benchmarks/calibration.py         # full run; writes benchmarks/results/calibration.md
    python benchmarks/calibration.py --samples 100 --only plain onnxq-entropy ort-entropy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing; `models` is a namespace package

import numpy as np  # noqa: E402

from benchmarks.provenance import provenance  # noqa: E402

ORT_METHODS = {"ort-minmax": "MinMax", "ort-entropy": "Entropy", "ort-percentile": "Percentile"}
ONNXQ_METHODS = ("minmax", "entropy", "mse", "percentile")
ORT_HISTOGRAM_LIMIT = 200  # samples; above this onnxruntime's histogram calibrators exceed 12 GB
CONFIGS = (
    ["plain"]
    + list(ORT_METHODS)
    + [f"onnxq-{m}" for m in ONNXQ_METHODS]
)
DEFAULT_OUT = REPO / "benchmarks" / "results" / "calibration.md"


# --------------------------------------------------------------------------------------------- child
def _feeds(images: Path, samples: int) -> list[dict[str, np.ndarray]]:
    """``samples`` feeds cycling over the preprocessed images (views, no copies: memory stays flat)."""
    x = np.load(images, allow_pickle=False)
    return [{"input": x[i % len(x)][None]} for i in range(samples)]


def _plain(model: Path, feeds: list[dict[str, np.ndarray]], out: Path) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for feed in feeds:
        session.run(None, feed)
    return {}


def _ort(model: Path, feeds: list[dict[str, np.ndarray]], out: Path, method: str) -> dict:
    from onnxruntime import quantization as ortq

    class Reader(ortq.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    ortq.quantize_static(
        str(model), str(out), Reader(), quant_format=ortq.QuantFormat.QDQ, per_channel=True,
        activation_type=ortq.QuantType.QInt8, weight_type=ortq.QuantType.QInt8,
        calibrate_method=getattr(ortq.CalibrationMethod, method),
    )  # fmt: skip
    return {}


def _onnxq(model: Path, feeds: list[dict[str, np.ndarray]], out: Path, method: str) -> dict:
    from onnxq import api
    from onnxq.collect import data
    from onnxq.config import ActivationSpec, QuantConfig

    config = QuantConfig(activations=ActivationSpec(method=method))
    result = api.quantize(str(model), data.from_iterable(feeds), config)
    result.save(out)
    return {"calibrate_s": result.report.timings.get("calibrate")}


def run_one(name: str, model: Path, images: Path, samples: int) -> dict:
    """Run configuration ``name`` and return its timings (the parent measures memory)."""
    feeds = _feeds(images, samples)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="onnxq-calib-bench-") as tmp:
        out = Path(tmp) / "model.onnx"
        t = time.perf_counter()
        if name == "plain":
            extra = _plain(model, feeds, out)
        elif name in ORT_METHODS:
            extra = _ort(model, feeds, out, ORT_METHODS[name])
        else:
            extra = _onnxq(model, feeds, out, name.removeprefix("onnxq-"))
        wall = time.perf_counter() - t
    return {"name": name, "samples": samples, "wall_s": wall, "load": load, **extra}


# -------------------------------------------------------------------------------------------- parent
def _prepare_images(folder: Path) -> tuple[Path, Path]:
    from models import efficientnet_lite0 as recipe

    model = recipe.build()
    images = folder / "calib.npy"
    np.save(images, np.concatenate([f["input"] for f in recipe.calib_feeds()]), allow_pickle=False)
    return model, images


def _spawn(name: str, model: Path, images: Path, samples: int, timeout: float) -> dict:
    """Run one configuration in a child process; add its peak RSS (os.wait4: this child only)."""
    import threading

    cmd = [sys.executable, __file__, "--one", name, "--model", str(model), "--images", str(images),
           "--samples", str(samples)]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves: Popen.wait would discard the rusage
    finally:
        timer.cancel()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        why = "timed out" if code == -9 else f"exit {code}"
        return {"name": name, "samples": samples, "error": why, "wall_s": time.monotonic() - start}
    return {**json.loads(lines[-1]), "peak_rss_gb": usage.ru_maxrss / 2**20}


def _ratio(value: float | None, plain: float | None) -> str:
    return "—" if value is None or not plain else f"{value / plain:.1f}"


def _row(r: dict, plain: dict[int, float]) -> str:
    n = r["samples"]
    if "skipped" in r or "error" in r:
        why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r['error']}"
        return f"| {r['label']} | {n} | — | — | — | — | — | — | {why} |"
    cal = r.get("calibrate_s")
    return (
        f"| {r['label']} | {n} | {r['wall_s']:.1f} | {1e3 * r['wall_s'] / n:.1f} | "
        f"{'—' if cal is None else f'{cal:.1f}'} | {r['peak_rss_gb']:.2f} | "
        f"{_ratio(r['wall_s'], plain.get(n))} | {_ratio(cal, plain.get(n))} | "
        f"load {r['load']:.1f}{_spread(r)} |"
    )


def _spread(r: dict) -> str:
    runs = r.get("runs", 1)
    return f"; median of {runs}, {r['wall_min_s']:.1f}-{r['wall_max_s']:.1f} s" if runs > 1 else ""


LABELS = {
    "plain": "plain float inference (onnxruntime defaults)",
    "ort-minmax": "onnxruntime quantize_static MinMax",
    "ort-entropy": "onnxruntime quantize_static Entropy",
    "ort-percentile": "onnxruntime quantize_static Percentile",
    **{f"onnxq-{m}": f"onnxq {m}" for m in ONNXQ_METHODS},
}
HEAD = (
    "| method | samples | wall s | ms/sample | of which collect s | peak RSS GB | wall × plain "
    "| collect × plain | note |\n|---|---|---|---|---|---|---|---|---|"
)


def plain_times(results: list[dict]) -> dict[int, float]:
    """Median wall time of the plain-inference runs per sample count (first and last in every round)."""
    times: dict[int, list[float]] = {}
    for r in results:
        if r["name"] == "plain" and "wall_s" in r and "error" not in r:
            times.setdefault(r["samples"], []).append(r["wall_s"])
    return {n: sum(v) / len(v) for n, v in times.items()}


def render(results: list[dict]) -> str:
    plain = plain_times(results)
    rows = [_row({**r, "label": LABELS[r["name"]]}, plain) for r in results]
    return "\n".join([HEAD] + rows)


def summary(results: list[dict]) -> list[str]:
    by = {(r["name"], r["samples"]): r for r in results if "wall_s" in r and "error" not in r}
    lines = []
    ort_e = by.get(("ort-entropy", 100))
    for name in ("onnxq-entropy", "onnxq-percentile", "onnxq-mse"):
        if ort_e and (q := by.get((name, 100))):
            speedup = ort_e["wall_s"] / q["wall_s"]
            lines.append(f"- {LABELS[name]} vs onnxruntime Entropy at 100 samples: {speedup:.1f}x faster "
                         "end to end (target >= 10x)")
    for name in ("onnxq-entropy", "onnxq-minmax"):
        small, big = by.get((name, 100)), by.get((name, 1000))
        if small and big:
            ratio = big["peak_rss_gb"] / small["peak_rss_gb"]
            lines.append(f"- {LABELS[name]}: peak RSS {small['peak_rss_gb']:.2f} GB at 100 samples, "
                         f"{big['peak_rss_gb']:.2f} GB at 1000 ({ratio:.2f}x; targets <= 1.2x and <= 1.5 GB)")
    return lines


def _log(r: dict) -> None:
    items = (f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
             if k not in ("name", "samples"))  # fmt: skip
    print(f"{r['name']} {r['samples']}: " + ", ".join(items), flush=True)


def run_all(configs: list[str], samples: list[int], timeout: float, repeat: int = 1) -> list[dict]:
    """Every configuration ``repeat`` times per sample count, in interleaved rounds (so that a busy spell
    of the shared machine hits all of them alike); one row each: median wall times, highest peak RSS."""
    _compile_bytecode()
    results = []
    with tempfile.TemporaryDirectory(prefix="onnxq-calib-bench-") as tmp:
        model, images = _prepare_images(Path(tmp))
        for n in samples:
            order = configs + (["plain"] if "plain" in configs and len(configs) > 1 else [])
            runs: dict[str, list[dict]] = {}
            for _ in range(repeat):
                for name in order:
                    if name in ("ort-entropy", "ort-percentile") and n > ORT_HISTOGRAM_LIMIT:
                        why = f"keeps all activations of all samples, ~{0.063 * n:.0f} GB"
                        r = {"name": name, "samples": n, "skipped": why}
                    else:
                        r = _spawn(name, model, images, n, timeout)
                    runs.setdefault(name, []).append(r)
                    _log(r)
            results += [_aggregate(rs) for rs in runs.values()]
    return results


def _compile_bytecode() -> None:
    """Compile onnxq to bytecode first, as ``pip install`` does (onnxruntime's own modules are): a
    checkout run with PYTHONDONTWRITEBYTECODE would otherwise compile onnxq in every child (~0.07 s)."""
    import compileall

    compileall.compile_dir(str(REPO / "onnxq"), quiet=1)


def _aggregate(runs: list[dict]) -> dict:
    """One row from repeated runs of a configuration: median of the times, highest memory, the spread."""
    ok = [r for r in runs if "wall_s" in r and "error" not in r and "skipped" not in r]
    if not ok:
        return runs[0]
    out = {**ok[0], "runs": len(ok), "wall_min_s": min(r["wall_s"] for r in ok),
           "wall_max_s": max(r["wall_s"] for r in ok)}  # fmt: skip
    for key in ("wall_s", "calibrate_s", "load"):
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            out[key] = float(np.median(values))
    out["peak_rss_gb"] = max(r["peak_rss_gb"] for r in ok)
    return out


def write(out: Path, table: str, lines: list[str]) -> None:
    cpu = platform.processor() or platform.machine()
    text = (
        "# Calibration cost: EfficientNet-Lite0, batch 1\n\n"
        f"`python benchmarks/calibration.py`, {provenance()}; {os.cpu_count()} cores ({cpu}).\n\n"
        "Wall time of the whole quantization (onnxq: preprocess, plan, collect, solve, rewrite, check, save; "
        "onnxruntime: quantize_static) with the data already in memory; peak RSS of the process. "
        "\"collect\" is onnxq's collection alone. \"× plain\" divides by the median of the plain-inference "
        "runs of the same sample count (first and last in every round). Every row is the median of its "
        "`--repeat` runs (interleaved rounds), with the spread in the note. Load = 1-minute load average "
        "when the run started: the machine is shared, and a load above its 2 cores slows every row.\n\n"
        f"{table}\n\n" + "\n".join(lines) + "\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"\nwrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--only", nargs="+", choices=CONFIGS, help="run only these configurations")
    p.add_argument("--out", type=Path, help="markdown file for the table (default: results/calibration.md "
                                            "for a full run, none otherwise)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each configuration, interleaved; the table shows medians (default 3)")
    p.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(run_one(args.one, args.model, args.images, args.samples[0])), flush=True)
        return 0
    results = run_all(list(args.only or CONFIGS), args.samples, args.timeout, args.repeat)
    table, lines = render(results), summary(results)
    print("\n" + table + "\n\n" + "\n".join(lines))
    out = args.out or (DEFAULT_OUT if not args.only and args.samples == [100, 1000] else None)
    if out is not None:
        write(out, table, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
