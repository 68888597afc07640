"""Calibrators: TensorRT entropy against a loop reference, closed forms, one conformance suite."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxq.calibrate import (
    MIN_SCALE,
    aggregate_batch_ranges,
    amax_entropy,
    amax_minmax,
    amax_mse,
    amax_percentile,
    kl_divergences,
    mse_errors,
    solve_range,
    symmetric_scale,
)
from onnxq.collect.counting import histogram
from onnxq.collect.grid import Histogram
from onnxq.collect.stats import TensorStats, new_stats, observe
from onnxq.errors import CalibrationDataError, ConfigError

# --- entropy: a plain loop reference written from the published description --------------------------


def ref_quantize_expand(src: list[int], levels: int) -> list[float]:
    """Merge ``src`` into ``levels`` groups (bin j -> group j*levels//len) and spread each group's sum
    uniformly over its non-empty bins; empty bins stay empty."""
    i = len(src)
    groups: dict[int, list[int]] = {}
    for j in range(i):
        groups.setdefault(j * levels // i, []).append(j)
    q = [0.0] * i
    for members in groups.values():
        total = sum(src[j] for j in members)
        nonempty = [j for j in members if src[j] > 0]
        for j in nonempty:
            q[j] = total / len(nonempty)
    return q


def ref_kl(counts: list[int], i: int, levels: int) -> float:
    p = [float(c) for c in counts[:i]]
    p[i - 1] += sum(counts[i:])
    q = ref_quantize_expand(list(counts[:i]), levels)
    sp, sq = sum(p), sum(q)
    if sq == 0:
        return math.inf
    kl = 0.0
    for pj, qj in zip(p, q):
        if pj > 0:
            if qj == 0:
                return math.inf
            kl += pj / sp * math.log((pj / sp) / (qj / sq))
    return kl


def ref_entropy(
    counts: np.ndarray, width: float, start_bin: int, levels: int, stride: int = 1
) -> tuple[float, list]:
    c = [int(v) for v in counts]
    cands = list(range(start_bin, len(c), stride))
    kls = [ref_kl(c, i, levels) for i in cands]
    best = min(kls)
    m = next(i for i, k in zip(cands, kls) if k <= best + 1e-10)
    return (m + 0.5) * width, kls


def test_worked_example_from_the_slides() -> None:
    p = [1, 0, 2, 3, 5, 3, 1, 7]
    assert ref_quantize_expand(p, 2) == [2, 0, 2, 2, 4, 4, 4, 4]
    # the vectorised divergence for i = 8 (no tail) is KL(P || Q) with that Q
    pn, qn = np.array(p) / 22, np.array([2, 0, 2, 2, 4, 4, 4, 4]) / 22
    expected = sum(a * math.log(a / b) for a, b in zip(pn, qn) if a > 0)
    assert kl_divergences(np.array(p), np.array([8]), levels=2)[0] == pytest.approx(expected, rel=1e-12)


def _adversarial(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cases = {}
    g = np.abs(rng.standard_normal(20_000))
    cases["gaussian"] = np.bincount(np.minimum((g / g.max() * n).astype(int), n - 1), minlength=n)
    lap = np.abs(rng.laplace(size=20_000))
    cases["heavy tail"] = np.bincount(np.minimum((lap / lap.max() * n).astype(int), n - 1), minlength=n)
    spikes = rng.integers(0, 5, n)
    spikes[[0, 3, n // 2, n - 1]] = [10_000, 5000, 7000, 3]
    cases["spikes"] = spikes
    single = np.zeros(n, int)
    single[n * 3 // 4] = 1000
    cases["single bin"] = single
    bin0 = np.zeros(n, int)
    bin0[0] = 12345
    cases["all in bin 0"] = bin0
    runs = rng.integers(0, 50, n) * (rng.random(n) < 0.15)
    runs[n // 8 : n // 2] = 0
    runs[n - 1] = 2
    cases["long empty runs"] = runs
    sparse = np.zeros(n, int)
    sparse[rng.choice(n, 9, replace=False)] = rng.integers(1, 100, 9)
    cases["few non-empty bins"] = sparse
    return cases


@pytest.mark.parametrize("n,start,levels,stride", [(256, 32, 16, 1), (200, 20, 12, 3), (96, 10, 7, 1)])
def test_entropy_matches_loop_reference(n: int, start: int, levels: int, stride: int) -> None:
    rng = np.random.default_rng(n)
    for name, counts in _adversarial(rng, n).items():
        hist = Histogram(counts, -4)
        ref_amax, ref_kls = ref_entropy(counts, hist.width, start, levels, stride)
        kls = kl_divergences(counts, np.arange(start, n, stride), levels)
        ref = np.array(ref_kls)
        assert np.array_equal(np.isinf(kls), np.isinf(ref)), name
        finite = np.isfinite(ref)
        np.testing.assert_allclose(kls[finite], ref[finite], rtol=1e-9, atol=1e-12, err_msg=name)
        got = amax_entropy(hist, start_bin=start, levels=levels, stride=stride, suppress_zero_bin=False)
        if np.isfinite(ref).any() and (counts[start:] > 0).any():
            assert got == ref_amax, name


def test_entropy_full_size_matches_reference_on_gaussian() -> None:
    rng = np.random.default_rng(11)
    hist = histogram(rng.standard_normal(200_000))
    ref_amax, ref_kls = ref_entropy(hist.counts, hist.width, 128, 128, stride=4)
    assert amax_entropy(hist, stride=4, suppress_zero_bin=False) == ref_amax
    # a sane threshold for a unit Gaussian; in the sparse far tail most cuts diverge (an empty bin
    # before the cut) and for this sample the minimum lies just past the max
    assert 2.5 < amax_entropy(hist) < 6.0


def test_entropy_zero_bin_suppression_equals_reference_on_counts_with_bin0_replaced() -> None:
    # ReLU-like data: a third exact zeros, the rest uniform on (0, 6]; the zero spike must not drag the
    # threshold down (pytorch-quantization's bins[0] = bins[1]).
    rng = np.random.default_rng(5)
    x = np.where(rng.random(300_000) < 0.35, 0.0, rng.uniform(0, 6, 300_000))
    hist = histogram(x)
    counts = hist.counts.copy()
    counts[0] = counts[1]
    ref_amax, _ = ref_entropy(counts, hist.width, 128, 128, stride=1)
    assert amax_entropy(hist) == ref_amax
    assert amax_entropy(hist) > 5.0


def test_entropy_fallbacks() -> None:
    assert amax_entropy(Histogram.empty()) == 0.0
    low = np.zeros(2048, int)
    low[:50] = 7  # data spans fewer bins than start_bin: nothing to choose, no clipping
    assert amax_entropy(Histogram(low, 0)) == 50.0
    tiny = Histogram(np.ones(64, int), 0)  # fewer bins than start_bin
    assert amax_entropy(tiny) == 64.0
    # every candidate diverges: the bin before each cut is empty while the tail is not
    gap = np.zeros(2048, int)
    gap[:100] = 5
    gap[2047] = 1
    assert amax_entropy(Histogram(gap, 0)) == 2048.0


def test_entropy_constant_tensor_is_not_inflated() -> None:
    hist = histogram(np.full(1000, 3.0))
    amax = amax_entropy(hist)
    assert 3.0 <= amax <= 3.0 + 2 * hist.width


@pytest.mark.parametrize("kw", [{"start_bin": 0}, {"levels": 0}, {"stride": 0}, {"levels": 2.5}])
def test_entropy_rejects_bad_options(kw: dict) -> None:
    with pytest.raises(ConfigError):
        amax_entropy(histogram(np.ones(3)), **kw)


# --- mse: an independent piecewise integration ------------------------------------------------------


def ref_bin_error(lo: float, hi: float, scale: float, levels: int) -> float:
    """Integral of (x - q(x))**2 over [lo, hi), q rounding to multiples m*scale (m <= levels): piecewise
    over the rounding intervals [(m - 1/2) s, (m + 1/2) s), the last one open to infinity (clipping)."""
    total = 0.0
    for m in range(levels + 1):
        a = max(lo, (m - 0.5) * scale)
        b = min(hi, (m + 0.5) * scale) if m < levels else hi
        if b > a:
            c = m * scale
            total += ((b - c) ** 3 - (a - c) ** 3) / 3
    return total


def test_mse_matches_piecewise_integration() -> None:
    rng = np.random.default_rng(12)
    hist = histogram(rng.laplace(size=50_000), num_bins=256)
    cands = np.arange(40, 256, 9)
    levels = 31
    ref = []
    for k in cands:
        s = (k + 0.5) / levels
        nonempty = np.flatnonzero(hist.counts)
        ref.append(sum(hist.counts[j] * ref_bin_error(j, j + 1.0, s, levels) for j in nonempty))
    np.testing.assert_allclose(mse_errors(hist.counts, cands, levels), ref, rtol=1e-9)
    best = (cands[int(np.argmin(ref))] + 0.5) * hist.width
    assert amax_mse(hist, levels=levels, start_bin=40, stride=9) == best


def test_mse_exact_zeros_cost_nothing_and_spikes_are_kept() -> None:
    counts = np.zeros(2048, int)
    counts[0] = 10**6  # exact zeros of a ReLU: bin [0, w) rounds to 0 for every candidate
    counts[1500] = 1000  # a saturated value (e.g. ReLU6's 6.0) must not be clipped
    amax = amax_mse(Histogram(counts, 0))
    assert 1500 <= amax <= 1502


# --- closed forms ------------------------------------------------------------------------------------


def test_percentile_on_uniform_data() -> None:
    x = np.random.default_rng(13).uniform(0, 10, 1_000_000)
    hist = histogram(x)
    for p in (50, 90, 99, 99.99):
        assert amax_percentile(hist, percentile=p) == pytest.approx(p / 10, abs=0.02)
    assert amax_percentile(hist, percentile=100) == pytest.approx(10, abs=hist.width)


def test_percentile_edges_by_hand() -> None:
    counts = np.zeros(16, int)
    counts[[0, 3, 7]] = [50, 49, 1]  # 100 values
    h = Histogram(counts, 0)
    assert amax_percentile(h, percentile=50) == 1.0  # 50 values reach bin 0: its right edge
    assert amax_percentile(h, percentile=50.01) == 4.0
    assert amax_percentile(h, percentile=99) == 4.0  # exactly 99 of 100: decimal, not float, rounding
    assert amax_percentile(h, percentile=99.5) == 8.0
    for bad in (0, -1, 100.5, True):
        with pytest.raises(ConfigError):
            amax_percentile(h, percentile=bad)


def test_percentile_on_gaussian() -> None:
    x = np.random.default_rng(14).standard_normal(2_000_000)
    assert amax_percentile(histogram(x), percentile=99.99) == pytest.approx(3.8906, abs=0.12)


def test_mse_on_uniform_keeps_nearly_the_full_range() -> None:
    x = np.random.default_rng(15).uniform(-5, 5, 500_000)
    amax = amax_mse(histogram(x))
    assert 0.95 * 5 <= amax <= 5.0 + 0.01


def test_mse_on_gaussian_clips_near_the_known_optimum() -> None:
    # MSE-optimal symmetric 8-bit clipping of a unit Gaussian is about 4 sigma (ACIQ, Banner et al.)
    amax = amax_mse(histogram(np.random.default_rng(16).standard_normal(1_000_000)))
    assert 3.3 < amax < 4.7



@pytest.mark.parametrize("seed", range(6))
def test_mse_coarse_search_finds_the_exact_optimum_or_no_better(seed: int) -> None:
    rng = np.random.default_rng(40 + seed)
    x = rng.standard_normal(200_000) * rng.uniform(0.1, 3)
    if seed % 2:  # two separated modes: an error curve with more than one minimum
        x = np.concatenate([x, rng.normal(40, 1, 2_000), rng.normal(90, 1, 300)])
    h = histogram(x)
    exact, fast = amax_mse(h), amax_mse(h, coarse=8)
    err = mse_errors(h.counts, np.array([exact, fast]) / h.width - 0.5)
    assert err[1] >= err[0] * (1 - 1e-9)  # never claims a lower error than the exhaustive search
    if seed % 2 == 0:
        assert fast == exact  # unimodal: the same threshold

# --- conformance suite over every calibrator ---------------------------------------------------------

CALIBRATORS = {
    "minmax": lambda s: amax_minmax(s),
    "entropy": lambda s: amax_entropy(s.abs_hist),
    "mse": lambda s: amax_mse(s.abs_hist),
    "percentile": lambda s: amax_percentile(s.abs_hist),
}


def _stats(x: np.ndarray) -> TensorStats:
    return observe(new_stats(), x)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(17).laplace(size=300_000).astype(np.float32)


@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_result_is_finite_and_positive(method: str, data: np.ndarray) -> None:
    amax = CALIBRATORS[method](_stats(data))
    assert math.isfinite(amax) and 0 < amax <= float(np.abs(data).max()) + 1e-2


@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_all_zero_tensor_gives_the_minimum_scale(method: str) -> None:
    s = _stats(np.zeros((2, 3, 8, 8), np.float32))
    amax = CALIBRATORS[method](s)
    assert math.isfinite(amax) and amax >= 0
    lo, hi = solve_range(s, method, symmetric=True)
    assert (lo, hi) == (0.0, 0.0)
    assert symmetric_scale(hi) == MIN_SCALE


@pytest.mark.parametrize("k", [2.0, 0.25, 1024.0])
@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_power_of_two_scaling_is_exact(method: str, k: float, data: np.ndarray) -> None:
    """The anchored grid of k*x is the grid of x shifted by log2(k) exponents: same counts."""
    a1, ak = CALIBRATORS[method](_stats(data)), CALIBRATORS[method](_stats(data * np.float32(k)))
    assert ak == a1 * k


@pytest.mark.parametrize("k", [3.0, 0.3, 1.7, 1.1])
@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_scaling_by_k_scales_amax_within_one_bin(method: str, k: float) -> None:
    """On data with a well-defined answer (a dense block and far, sparse outliers)."""
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.uniform(-4, 4, 300_000), rng.choice([-1, 1], 20) * rng.uniform(25, 30, 20)])
    s1, sk = _stats(x), _stats(x * k)
    a1, ak = CALIBRATORS[method](s1), CALIBRATORS[method](sk)
    tol = max(k * s1.abs_hist.width, sk.abs_hist.width) * (1 + 1e-9)
    assert abs(ak - k * a1) <= tol


@pytest.mark.parametrize("k", [3.0, 0.3, 1.7])
@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_scaling_heavy_tailed_data_stays_close(method: str, k: float, data: np.ndarray) -> None:
    """On a sparse tail, rebinning can move entropy/MSE between near-equal minima (entropy's KL curve
    for this Laplace sample has minima at 10.1, 10.6 and 10.8 within 1 % of each other), so only
    closeness is asserted; an absolute constant hidden in a calibrator would still fail this."""
    a1 = CALIBRATORS[method](_stats(data.astype(np.float64)))
    ak = CALIBRATORS[method](_stats(data.astype(np.float64) * k))
    assert abs(ak / k - a1) <= 0.1 * a1


@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_deterministic_and_independent_of_batching(method: str, data: np.ndarray) -> None:
    whole = _stats(data)
    again = _stats(data.copy())
    batched = new_stats()
    for part in np.array_split(data[::-1], 13):
        batched = observe(batched, part)
    a = CALIBRATORS[method](whole)
    assert a == CALIBRATORS[method](again) == CALIBRATORS[method](batched)


@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_outliers_are_clipped_except_by_minmax(method: str) -> None:
    x = np.random.default_rng(18).standard_normal(1_000_000).astype(np.float32)
    x[[10, 5000, 70_000]] = [20.0, -19.0, 20.0]
    amax = CALIBRATORS[method](_stats(x))
    if method == "minmax":
        assert amax == 20.0
    else:
        assert 3.0 < amax < 8.0


# --- per-batch aggregation and solve_range -----------------------------------------------------------


def test_aggregate_batch_ranges_by_hand() -> None:
    r = np.array([[-1.0, 3.0], [-2.0, 5.0], [-0.5, 3.5], [-3.0, 100.0]])
    assert aggregate_batch_ranges(r, "max") == (-3.0, 100.0)
    assert aggregate_batch_ranges(r, "mean") == (-1.625, 27.875)
    assert aggregate_batch_ranges(r, "median") == (-1.5, 4.25)
    # modal: power-of-two ceilings lo 1,2,0.5,4 (tie -> largest 4) and hi 4,8,4,128 -> 4
    assert aggregate_batch_ranges(r, "modal") == (-4.0, 4.0)
    assert aggregate_batch_ranges(np.array([[0.0, 2.0], [1.0, 2.0]]), "modal") == (0.0, 2.0)
    with pytest.raises(ConfigError, match="max, mean, median, modal"):
        aggregate_batch_ranges(r, "mode")
    with pytest.raises(CalibrationDataError):
        aggregate_batch_ranges(np.zeros((0, 2)), "max")


def test_solve_range_symmetric_and_asymmetric() -> None:
    rng = np.random.default_rng(19)
    x = np.concatenate([rng.standard_normal(200_000) + 2.0, [-3.0, 9.5]]).astype(np.float32)
    unsigned, signed = observe(new_stats(), x), observe(new_stats(signed=True), x)
    assert solve_range(unsigned, "minmax", symmetric=True) == (-9.5, 9.5)
    assert solve_range(signed, "minmax", symmetric=False) == (-3.0, 9.5)
    for method in ("entropy", "mse", "percentile"):
        lo, hi = solve_range(unsigned, method, symmetric=True)
        assert lo == -hi and 4.0 < hi <= 9.5
        assert solve_range(signed, method, symmetric=True) == (lo, hi)  # pos+neg merge to |x|
        alo, ahi = solve_range(signed, method, symmetric=False)
        assert -3.0 <= alo <= 0.0 and 4.0 < ahi <= 9.5
    lo, hi = solve_range(signed, "percentile", symmetric=False, percentile=100)
    assert (lo, hi) == (-3.0, 9.5)  # clamped to the observed extremes on each side


def test_solve_range_one_sided_and_constant_tensors() -> None:
    relu = observe(new_stats(signed=True), np.maximum(np.random.default_rng(20).standard_normal(10_000), 0))
    for method in ("minmax", "entropy", "mse", "percentile"):
        lo, hi = solve_range(relu, method, symmetric=False)
        assert lo == 0.0 and hi > 0
    const = observe(new_stats(), np.full(100, 3.0))
    assert solve_range(const, "entropy", symmetric=True) == (-3.0, 3.0)


def test_solve_range_errors() -> None:
    s = observe(new_stats(histogram=False), np.ones(4))
    with pytest.raises(ConfigError, match="minmax, entropy, mse, percentile"):
        solve_range(s, "kl", symmetric=True)
    with pytest.raises(ConfigError, match="percentile"):
        solve_range(s, "percentile", symmetric=True, pct=99)
    with pytest.raises(ConfigError, match="needs histograms"):
        solve_range(s, "entropy", symmetric=True)
    with pytest.raises(ConfigError, match="signed histograms"):
        solve_range(observe(new_stats(), np.ones(4)), "mse", symmetric=False)
    with pytest.raises(CalibrationDataError, match="no values"):
        solve_range(new_stats(), "minmax", symmetric=True)
    assert solve_range(s, "minmax", symmetric=True, statistic="mean") == (-1.0, 1.0)


def _guard_reference(s: TensorStats, amax: float, ratio: float) -> float:
    """The guard as specified: keep ``amax`` unless the top bin is a spike (>= 1e-4 of the values and
    >= 8x the mean of the 32 bins below) or it clips more than 10 % of the values, and ``amax``'s expected squared error exceeds ``ratio`` times
    that of the exhaustive MSE optimum (capped at the data's max)."""
    h = s.abs_hist
    top = int(np.flatnonzero(h.counts)[-1])
    spike = h.counts[top] >= 1e-4 * h.counts.sum() and h.counts[top] >= 8 * h.counts[top - 32:top].mean()
    edges = np.arange(h.counts.size) * h.width  # lower edge of each bin
    clipped = h.counts[edges >= amax].sum() / h.counts.sum()
    if not (spike or clipped > 0.1):
        return amax
    best = min(amax_mse(h), s.absmax)
    err = mse_errors(h.counts, np.array([amax, best]) / h.width - 0.5)
    return best if err[0] > ratio * err[1] else amax


@pytest.mark.parametrize("case", ["relu6-tail", "gaussian", "long-tail"])
def test_guard_replaces_only_a_threshold_far_worse_than_the_optimum(case: str) -> None:
    from onnxq.calibrate.solve import _tensor_range
    from onnxq.config import ActivationSpec, QuantConfig

    rng = np.random.default_rng(50)
    if case == "relu6-tail":  # 0.5 % at the ReLU6 ceiling: the 99th percentile clips them all, costly
        x = np.clip(rng.exponential(0.5, 300_000), 0, 6)
        x[:1500] = 6.0
    elif case == "gaussian":
        x = rng.standard_normal(300_000)
    else:  # SiLU-like: most values small, rare large ones; clipping them is the point of calibration
        x = rng.lognormal(0.0, 0.8, 300_000)
    s = _stats(x.astype(np.float32))

    pct = 99.99 if case == "gaussian" else 99.0

    def spec(guard):
        return QuantConfig(activations=ActivationSpec(method="percentile", percentile=pct, guard_ratio=guard))

    amax = _tensor_range(s, spec(None), True)[1]
    got = _tensor_range(s, spec(2.0), True)[1]
    assert got == pytest.approx(_guard_reference(s, amax, 2.0), rel=1e-6)
    if case == "relu6-tail":
        assert amax < 3.0 and got > 5.9  # the percentile clips the ceiling; the guard restores it
    elif case == "gaussian":
        assert got == amax  # a Gaussian's 99.99th percentile (3.9 sigma) is near the optimum: kept
    else:
        h = s.abs_hist
        err = mse_errors(h.counts, np.array([amax, amax_mse(h)]) / h.width - 0.5)
        assert err[0] > 2 * err[1]  # an error-only guard would have replaced it...
        assert got == amax  # ...but a tail is no ceiling: kept


@pytest.mark.parametrize("symmetric", [True, False], ids=["tensorrt", "ort-cpu"])
def test_guard_rescues_entropy_on_data_away_from_zero(symmetric: bool) -> None:
    """Entropy's blind spot: every candidate folding all values into one bin has zero divergence."""
    from onnxq.calibrate.solve import _tensor_range
    from onnxq.collect.stats import new_stats, observe
    from onnxq.config import ActivationSpec, QuantConfig

    x = np.random.default_rng(51).uniform(0.12, 0.35, 200_000).astype(np.float32)  # a HardSigmoid output
    s = observe(new_stats(2048, histogram=True, signed=not symmetric), x)
    unguarded = QuantConfig(activations=ActivationSpec(method="entropy", guard_ratio=None))
    raw = _tensor_range(s, unguarded, symmetric)[1]
    assert raw < 0.13  # clips everything
    got = _tensor_range(s, QuantConfig(activations=ActivationSpec(method="entropy")), symmetric)
    assert got[1] == pytest.approx(amax_mse(s.abs_hist if symmetric else s.pos), rel=0.02)
    assert got[1] > 0.34 and got[0] == (0.0 if not symmetric else -got[1])
