"""Turn statistics into quantization parameters for every spec of a plan (pure math).

Activations: a float range per tensor from its statistics and the chosen method, then one range per
shared-scale group (the union of its members' ranges), then scale/zero-point for the target dtype.
Weights: per-channel (or per-tensor) amax from the values the plan carries (``QuantPlan.values``); no data
and no graph needed.
Biases (onnxruntime CPU target): int32 with scale = input scale x weight scale, zero-point 0, as
onnxruntime's integer kernels require.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from onnxq.calibrate.guard import guarded
from onnxq.calibrate.params import MIN_SCALE, asymmetric_params, symmetric_scale
from onnxq.calibrate.ranges import solve_range
from onnxq.calibrate.weights import weight_amax
from onnxq.collect.stats import TensorStats
from onnxq.config import BatchStatistic, Method, QuantConfig, Target
from onnxq.cores import usable_cores
from onnxq.errors import CalibrationDataError
from onnxq.records import QuantParams, QuantPlan, Role, TensorQuantSpec


def activation_range(stats: TensorStats, config: QuantConfig, symmetric: bool) -> tuple[float, float]:
    spec = config.activations
    if spec.batch_statistic is not BatchStatistic.NONE and spec.method is Method.MINMAX:
        from onnxq.calibrate.minmax import aggregate_batch_ranges

        return aggregate_batch_ranges(stats.batch_ranges, spec.batch_statistic.value)
    options = {"percentile": spec.percentile} if spec.method is Method.PERCENTILE else {}
    return solve_range(stats, spec.method.value, symmetric=symmetric, **options)


def solve(stats: dict[str, TensorStats], plan: QuantPlan, config: QuantConfig) -> dict[str, QuantParams]:
    """QuantParams for every spec of ``plan``, keyed by ``spec.key``: a function of its arguments only.

    ``config``'s activation method must be a method, not ``auto`` (which chooses among methods by solving
    with each: onnxq.analysis.auto).
    """
    if config.activations.method is Method.AUTO:
        raise ValueError("solve needs one activation method; auto chooses among them (onnxq.api.quantize)")
    ranges = _activation_ranges(stats, plan, config)
    params: dict[str, QuantParams] = {}
    for spec in plan.activations():
        lo, hi = ranges[spec.group or spec.tensor]
        params[spec.key] = _activation_params(spec, lo, hi)
    for spec in plan.weights():
        value = plan.values.get(spec.tensor)
        if value is None:
            raise ValueError(f"the plan carries no values for weight {spec.tensor!r}: make it with "
                             "onnxq.placement.plan (a plan read from JSON has no weights)")
        params[spec.key] = _weight_params(spec, value, config)
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
        amax = guarded(s.abs_hist, s.absmax, hi, guard)
        return -amax, amax
    if s.pos is None or s.neg is None:
        return lo, hi
    return -guarded(s.neg, max(-s.min, 0.0), -lo, guard), guarded(s.pos, max(s.max, 0.0), hi, guard)


def _workers(jobs: int) -> int:
    return max(1, min(jobs, usable_cores(), 8))


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


def _weight_params(spec: TensorQuantSpec, value: np.ndarray, config: QuantConfig) -> QuantParams:
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
