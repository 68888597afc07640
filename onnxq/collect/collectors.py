"""The collector: run the float model with onnxruntime over the data and stream statistics.

Memory is O(model + one batch's exposed tensors + histograms): each batch's activations are reduced to
statistics and dropped before the next batch runs. Min-max calibration reduces inside the graph
(ReduceMin/ReduceMax), histogram methods expose the planned tensors and bin them with numpy. When
the exposed tensors of one batch would exceed ``memory_mb``, they are split over several passes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import onnx
from tqdm import tqdm

from onnxq import runtime
from onnxq.collect import augment
from onnxq.collect.data import DataSource, batched, input_specs_from_model, validated
from onnxq.collect.stats import TensorStats, merge_stats, new_stats, observe
from onnxq.config import QuantConfig, Target
from onnxq.errors import CalibrationDataError
from onnxq.placement.plan import QuantPlan

log = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 1024
UNKNOWN_TENSOR_MB = 16.0


def collect(
    model: onnx.ModelProto,
    plan: QuantPlan,
    source: DataSource,
    config: QuantConfig,
    *,
    progress: bool = False,
    histograms: bool | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
) -> tuple[dict[str, TensorStats], int]:
    """Statistics of every planned activation tensor, and the number of samples seen."""
    tensors = list(dict.fromkeys(s.tensor for s in plan.activations()))
    if not tensors:
        return {}, 0
    hist = config.activations.needs_histogram if histograms is None else histograms
    signed = hist and config.target is not Target.TENSORRT
    empty = new_stats(config.activations.num_bins, histogram=hist, signed=signed)
    stats = {t: empty for t in tensors}
    specs = input_specs_from_model(model)
    if config.batch_size > 1:
        source = validated(batched(source, config.batch_size, specs), specs)
    inputs = {s.name for s in specs}
    internal = [t for t in tensors if t not in inputs]
    passes = _split_passes(model, internal, memory_mb) if hist else [internal]
    samples = 0
    for k, group in enumerate(passes):
        desc = "calibrating" if len(passes) == 1 else f"calibrating (pass {k + 1}/{len(passes)})"
        seen = _run_pass(model, group, inputs if k == 0 else set(), tensors, source, stats, hist, progress, desc)
        samples = seen if k == 0 else samples
    if samples == 0:
        raise CalibrationDataError(f"{source.description} produced no samples; give at least one")
    return stats, samples


def _run_pass(model, group, inputs, tensors, source, stats, hist, progress, desc) -> int:
    if hist:
        session = runtime.make_session(augment.expose(model, group))
        fetch = list(group)
    else:
        session = runtime.make_session(augment.add_range_outputs(model, group))
        fetch = [n for t in group for n in augment.range_output_names(t)]
    observed_inputs = [t for t in tensors if t in inputs]
    samples = 0
    with tqdm(total=source.count, disable=not progress, unit="batch", desc=desc, leave=False) as bar:
        for feed in source:
            outputs = runtime.run(session, feed, fetch) if fetch else []
            for name in observed_inputs:
                stats[name] = _observe(stats[name], feed[name], name)
            if hist:
                for name, value in zip(group, outputs):
                    stats[name] = _observe(stats[name], value, name)
            else:
                for k, name in enumerate(group):
                    lo, hi, size = outputs[3 * k: 3 * k + 3]
                    stats[name] = _observe_range(stats[name], float(lo), float(hi), int(size), name)
            samples += _batch_size(feed)
            bar.update(1)
    return samples


def _observe(s: TensorStats, value: np.ndarray, name: str) -> TensorStats:
    try:
        return observe(s, value)
    except CalibrationDataError as exc:
        raise CalibrationDataError(f"tensor {name!r}: {exc}") from None


def _observe_range(s: TensorStats, lo: float, hi: float, size: int, name: str) -> TensorStats:
    if size == 0:
        return s
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise CalibrationDataError(
            f"tensor {name!r} has NaN or infinite values during calibration: check the calibration data "
            "and the float model on it"
        )
    batch = TensorStats(s.num_bins, size, lo, hi, batch_ranges=np.array([[lo, hi]]))
    return merge_stats(s, batch)


def _batch_size(feed: dict[str, np.ndarray]) -> int:
    for value in feed.values():
        arr = np.asarray(value)
        return int(arr.shape[0]) if arr.ndim else 1
    return 1


def _tensor_mb(model: onnx.ModelProto) -> dict[str, float]:
    sizes = {}
    for vi in model.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            sizes[vi.name] = float(np.prod([d.dim_value for d in dims])) * 4 / 2**20
    return sizes


def _split_passes(model: onnx.ModelProto, tensors: list[str], memory_mb: float) -> list[list[str]]:
    """Greedy split of exposed tensors into passes whose per-batch output stays under ``memory_mb``."""
    sizes = _tensor_mb(model)
    passes: list[list[str]] = [[]]
    used = 0.0
    for name in tensors:
        mb = sizes.get(name, UNKNOWN_TENSOR_MB)
        if passes[-1] and used + mb > memory_mb:
            passes.append([])
            used = 0.0
        passes[-1].append(name)
        used += mb
    return passes


