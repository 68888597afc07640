"""Turn statistics into quantization parameters for every spec of a plan (pure math).

Activations: a float range per tensor from its statistics and the chosen method, then one range per
shared-scale group (the union of its members' ranges), then scale/zero-point for the target dtype.
Weights: per-channel (or per-tensor) amax from the initializer values; no data needed.
Biases (onnxruntime CPU target): int32 with scale = input scale x weight scale, zero-point 0, as
onnxruntime's integer kernels require.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxq.calibrate.mse import amax_mse, mse_errors
from onnxq.calibrate.params import MIN_SCALE, asymmetric_params, symmetric_scale
from onnxq.calibrate.ranges import solve_range
from onnxq.calibrate.weights import weight_amax
from onnxq.collect.stats import Histogram, TensorStats
from onnxq.config import BatchStatistic, Method, QuantConfig, Target
from onnxq.errors import CalibrationDataError
from onnxq.graph.query import GraphIndex
from onnxq.placement.plan import QuantPlan, Role, TensorQuantSpec
from onnxq.rewrite.insert_qdq import QuantParams


def activation_range(stats: TensorStats, config: QuantConfig, symmetric: bool) -> tuple[float, float]:
    spec = config.activations
    if spec.batch_statistic is not BatchStatistic.NONE:
        from onnxq.calibrate.minmax import aggregate_batch_ranges

        return aggregate_batch_ranges(stats.batch_ranges, spec.batch_statistic.value)
    options = {"percentile": spec.percentile} if spec.method is Method.PERCENTILE else {}
    return solve_range(stats, spec.method.value, symmetric=symmetric, **options)


def solve(
    stats: dict[str, TensorStats], plan: QuantPlan, model: onnx.ModelProto, config: QuantConfig
) -> dict[str, QuantParams]:
    """QuantParams for every spec of ``plan``, keyed by ``spec.key``."""
    ranges = _activation_ranges(stats, plan, config)
    params: dict[str, QuantParams] = {}
    for spec in plan.activations():
        lo, hi = ranges[spec.group or spec.tensor]
        params[spec.key] = _activation_params(spec, lo, hi)
    index = GraphIndex.build(gs.import_onnx(model))
    for spec in plan.weights():
        params[spec.key] = _weight_params(spec, index, config)
    for spec in plan.biases():
        params[spec.key] = _bias_params(spec, plan, params)
    return params


def _activation_ranges(stats, plan: QuantPlan, config: QuantConfig) -> dict[str, tuple[float, float]]:
    specs = plan.activations()
    for spec in specs:
        if stats.get(spec.tensor) is None:
            raise CalibrationDataError(
                f"no statistics for tensor {spec.tensor!r}: the statistics file was collected for another "
                "model or plan; run onnxq calibrate again on this model"
            )
    # Each tensor's range is a pure function of its statistics; numpy releases the GIL in the histogram
    # searches, so threads overlap them. Results are merged in plan order: the same for any thread count.
    unique = list(dict.fromkeys((spec.tensor, spec.symmetric) for spec in specs))
    with ThreadPoolExecutor(max_workers=_workers(len(unique))) as pool:
        solved = dict(zip(unique, pool.map(lambda key: _tensor_range(stats[key[0]], config, key[1]), unique)))
    out: dict[str, tuple[float, float]] = {}
    for spec in specs:
        lo, hi = solved[(spec.tensor, spec.symmetric)]
        key = spec.group or spec.tensor
        if key in out:
            plo, phi = out[key]
            lo, hi = min(lo, plo), max(hi, phi)
        out[key] = (lo, hi)
    return out


def _tensor_range(s: TensorStats, config: QuantConfig, symmetric: bool) -> tuple[float, float]:
    if s.count == 0:
        return 0.0, 0.0
    lo, hi = activation_range(s, config, symmetric)
    guard = config.activations.guard_ratio
    # mse already is the optimum the guard compares against
    if not guard or config.activations.method in (Method.MINMAX, Method.MSE) or not s.has_histogram:
        return lo, hi
    if symmetric:
        amax = _guarded(s.abs_hist, s.absmax, hi, guard)
        return -amax, amax
    if s.pos is None or s.neg is None:
        return lo, hi
    return -_guarded(s.neg, max(-s.min, 0.0), -lo, guard), _guarded(s.pos, max(s.max, 0.0), hi, guard)


def _workers(jobs: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(jobs, cores, 8))


def _guarded(h: Histogram, observed: float, amax: float, ratio: float) -> float:
    """``amax`` (a threshold on the non-negative values of ``h``, one side of a tensor), or the MSE-optimal
    threshold when ``amax`` is suspect and its expected squared error is more than ``ratio`` times the
    optimum. Suspect: the side saturates at its maximum (a ReLU6 or Clip ceiling many values reach), or
    ``amax`` clips more than ``CLIP_SHARE`` of the values (that is no longer clipping outliers).

    Why not every threshold: entropy clipped EfficientNet-Lite0's ReLU6 outputs at 3.4 of 6 (44x the
    optimal error; agreement 97.25 -> 99.0 with the guard), but on YOLOX-Nano the MSE optimum of its
    long-tailed SiLU outputs keeps rare outliers and wastes resolution on them (mAP 27.9 -> 4.1 when
    every tensor was guarded). A ceiling is a spike in the top bin, an outlier is a lone count there.
    The clipped share catches entropy's blind spot: for data away from zero (a HardSigmoid output in
    [0.12, 0.35]) every candidate that folds all values into one bin has zero divergence, and TensorRT's
    search returns the smallest one, clipping everything.

    The optimum comes from a coarse-then-fine search (8x cheaper): a near-optimal reference can only make
    the guard fire less often, never replace a threshold that the exact optimum would have kept."""
    if amax <= 0.0 or h.total == 0 or not (saturates(h) or clipped_share(h, amax) > CLIP_SHARE):
        return amax
    best = min(amax_mse(h, coarse=8), observed)
    errors = mse_errors(h.counts, np.array([amax, best]) / h.width - 0.5)
    return best if errors[0] > ratio * errors[1] else amax


CLIP_SHARE = 0.1


def clipped_share(h: Histogram, amax: float) -> float:
    """Share of the values in bins wholly above ``amax``."""
    first = int(np.ceil(amax / h.width))
    return float(h.counts[first:].sum()) / h.total


SATURATION_SHARE = 1e-4  # of all values in the top bin
SATURATION_SPIKE = 8.0  # times the mean count of the bins just below it


def saturates(h: Histogram, below: int = 32) -> bool:
    """True when the top non-empty bin is a spike: at least ``SATURATION_SHARE`` of all values and
    ``SATURATION_SPIKE`` times the mean of the ``below`` bins under it (values piling up at a ceiling)."""
    top = h.top_bin
    if top < 1:
        return False
    counts = h.counts
    peak = float(counts[top])
    under = float(counts[max(0, top - below):top].mean())
    return peak >= SATURATION_SHARE * h.total and peak >= SATURATION_SPIKE * under


def _activation_params(spec: TensorQuantSpec, lo: float, hi: float) -> QuantParams:
    if spec.symmetric:
        amax = max(abs(lo), abs(hi))
        scale = np.float32(symmetric_scale(amax))
        zp = np.zeros((), dtype=np.int8 if spec.dtype == "int8" else np.uint8)
        return QuantParams(np.asarray(scale, np.float32), zp, None, spec.dtype, -amax, amax)
    scale, zero_point = asymmetric_params(lo, hi)
    return QuantParams(np.asarray(scale, np.float32), np.asarray(zero_point, np.uint8), None, spec.dtype, lo, hi)


def weight_qmax(config: QuantConfig) -> float:
    reduce = config.weights.reduce_range
    if reduce is None:
        reduce = config.target is Target.ORT_CPU
    return 63.0 if reduce else 127.0


def _weight_params(spec: TensorQuantSpec, index: GraphIndex, config: QuantConfig) -> QuantParams:
    value = index.constant_value(index.tensors[spec.tensor])
    options = {"percentile": config.weights.percentile} if config.weights.method.value == "percentile" else {}
    amax = np.asarray(weight_amax(value, spec.axis, config.weights.method.value, **options), dtype=np.float64)
    scale = np.maximum(amax / weight_qmax(config), MIN_SCALE).astype(np.float32)
    if spec.axis is None:
        scale = scale.reshape(())
    zp = np.zeros(scale.shape, dtype=np.int8)
    return QuantParams(scale, zp, spec.axis, "int8", float(-amax.max()), float(amax.max()))


def _bias_params(spec: TensorQuantSpec, plan: QuantPlan, params: dict[str, QuantParams]) -> QuantParams:
    act, weight = spec.bias_of
    act_p = params[plan.spec_for(act, Role.ACTIVATION).key]
    weight_spec = next(s for s in plan.weights() if s.tensor == weight)
    w_p = params[weight_spec.key]
    scale = (np.float64(act_p.scale) * w_p.scale.astype(np.float64)).astype(np.float32)
    scale = np.maximum(scale, np.float32(MIN_SCALE))
    zp = np.zeros(scale.shape, dtype=np.int32)
    return QuantParams(scale, zp, 0 if scale.ndim == 1 else None, "int32")
