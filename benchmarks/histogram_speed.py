"""Time onnxq.collect.stats.observe (compiled kernel, numpy only) against numpy.histogram and others.

fast-histogram and boost-histogram are timed too when installed.

Two workloads, both float32:
  * one array of 6.7 M elements (one EfficientNet-Lite0 image's worth of quantized activations);
  * the ~50 Conv/Gemm input tensors of EfficientNet-Lite0 at 224x224, batch 1 (sizes derived from its
    block structure; post-ReLU6 tensors are clipped to [0, 6] with many exact zeros, like the real ones).

Usage:  python benchmarks/histogram_speed.py [--repeat 7] [--bins 2048] [--clock wall|cpu]
Prints the best-of-N wall time in ms per call (per image for the list). The third-party histogram
libraries are optional; add them to PYTHONPATH to include them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from onnxq.collect import counting
from onnxq.collect.grid import exponent_for
from onnxq.collect.stats import new_stats, observe


def efficientnet_lite0_shapes() -> list[tuple[tuple[int, ...], bool]]:
    """(shape, post_relu6) of every Conv/Gemm activation input of EfficientNet-Lite0 at 224x224."""
    out: list[tuple[tuple[int, ...], bool]] = [((3, 224, 224), False)]
    res, cin = 112, 32
    # (expand ratio, out channels, repeats, first stride)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 40, 2, 2), (6, 80, 3, 2), (6, 112, 3, 1),
                       (6, 192, 4, 2), (6, 320, 1, 1)]:
        for r in range(n):
            stride = s if r == 0 else 1
            hidden = cin * t
            if t != 1:
                out.append(((cin, res, res), False))         # expand 1x1 input (block input)
            out.append(((hidden, res, res), True))           # depthwise input (after ReLU6)
            res //= stride
            out.append(((hidden, res, res), True))           # project 1x1 input (after ReLU6)
            cin = c
    out.append(((cin, res, res), False))                     # head conv input
    out.append(((1280,), True))                              # classifier input (pooled)
    return out


def make_tensors(rng: np.random.Generator) -> list[np.ndarray]:
    tensors = []
    for shape, relu6 in efficientnet_lite0_shapes():
        x = rng.standard_normal(shape, dtype=np.float32) * 2.0
        tensors.append(np.clip(x, 0, 6) if relu6 else x)
    return tensors


def best_ms(fn, repeat: int, clock=time.perf_counter) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times) * 1e3


def np_histogram(x: np.ndarray, bins: int) -> np.ndarray:
    a = np.abs(x)
    return np.histogram(a, bins=bins, range=(0.0, float(a.max()) or 1.0))[0]


def numpy_only(fn, *args):
    """``fn(*args)`` with the compiled counting kernel switched off (the fallback where it is not built)."""
    kernel, counting._counting = counting._counting, None
    try:
        return fn(*args)
    finally:
        counting._counting = kernel


def candidates(bins: int) -> dict[str, object]:
    fns: dict[str, object] = {
        "numpy.histogram(|x|)": lambda x: np_histogram(x, bins),
        "observe minmax only": lambda x: observe(new_stats(bins, histogram=False), x),
        "observe |x| histogram": lambda x: observe(new_stats(bins), x),
        "observe signed histograms": lambda x: observe(new_stats(bins, signed=True), x),
        "observe |x| histogram, numpy only": lambda x: numpy_only(observe, new_stats(bins), x),
        "observe signed histograms, numpy only": lambda x: numpy_only(observe, new_stats(bins, signed=True), x),
    }
    try:
        import fast_histogram

        def fh(x: np.ndarray) -> np.ndarray:
            a = np.abs(x)
            top = bins * 2.0 ** exponent_for(float(a.max()), bins)
            return fast_histogram.histogram1d(a, bins=bins, range=(0.0, top))

        fns["fast_histogram.histogram1d(|x|)"] = fh
    except ImportError:
        pass
    try:
        import boost_histogram as bh

        def boost(x: np.ndarray, threads: int | None = None) -> np.ndarray:
            a = np.abs(x).reshape(-1)
            top = bins * 2.0 ** exponent_for(float(a.max()), bins)
            h = bh.Histogram(bh.axis.Regular(bins, 0.0, top, underflow=False, overflow=False),
                             storage=bh.storage.Int64())
            h.fill(a, threads=threads)
            return h.view()

        fns["boost_histogram fill(|x|)"] = boost
        fns["boost_histogram fill(|x|), 2 threads"] = lambda x: boost(x, 2)
    except ImportError:
        pass
    return fns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--bins", type=int, default=2048)
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="cpu = this thread's CPU time: steadier on a shared machine, but it hides extra threads",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    rng = np.random.default_rng(0)
    big = rng.standard_normal(6_700_000, dtype=np.float32) * 2.0
    tensors = make_tensors(rng)
    total = sum(t.size for t in tensors)
    print(f"{'method':40s} {'6.7M array':>12s} {f'{len(tensors)} tensors ({total / 1e6:.2f}M)':>22s}")
    for name, fn in candidates(args.bins).items():
        one = best_ms(lambda fn=fn: fn(big), args.repeat, clock)
        many = best_ms(lambda fn=fn: [fn(t) for t in tensors], args.repeat, clock)
        print(f"{name:40s} {one:9.1f} ms {many:19.1f} ms")


if __name__ == "__main__":
    main()
