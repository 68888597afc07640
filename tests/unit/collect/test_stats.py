"""Streaming statistics: exact anchored histograms, batch invariance, signed halves, persistence."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxq.collect import counting as K
from onnxq.collect.counting import histogram
from onnxq.collect.grid import MIN_EXPONENT, Histogram, exponent_for, merge
from onnxq.collect.stats import TensorStats, merge_stats, new_stats, observe
from onnxq.collect.stats_file import load_stats, save_stats
from onnxq.errors import CalibrationDataError, ConfigError, OutputError

# --- both counting paths -----------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module", params=["kernel", "numpy"])
def counting(request: pytest.FixtureRequest):
    """Every test here runs with the compiled kernel (for tensors of any size) and with numpy only.

    Module scope, attributes set by hand: hypothesis refuses function-scoped fixtures in @given tests.
    """
    saved = K._counting, K._MIN_KERNEL
    if request.param == "kernel":
        if K._counting is None:
            if os.environ.get("CI"):
                pytest.fail("the compiled counting kernel was not built (setup.py, optional extension)")
            pytest.skip("the compiled counting kernel is not built here (no C compiler at install time)")
        K._MIN_KERNEL = 0
    else:
        K._counting = None
    yield request.param
    K._counting, K._MIN_KERNEL = saved


# --- independent references -------------------------------------------------------------------------


def ref_exponent(absmax: float, n: int) -> int:
    """Smallest e >= MIN_EXPONENT with absmax < n * 2**e, by walking up from the minimum."""
    e = MIN_EXPONENT
    while absmax >= n * 2.0**e:
        e += 1
    return e


def ref_hist(values: np.ndarray, n: int = 2048) -> Histogram:
    """Bin by float64 division by the width (exact for power-of-two widths) and np.bincount."""
    a = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
    e = ref_exponent(float(a.max()) if a.size else 0.0, n)
    idx = np.floor(a / 2.0**e).astype(np.int64)
    return Histogram(np.bincount(idx, minlength=n), e)


def wide_data(rng: np.random.Generator, size: int) -> np.ndarray:
    """Values over many orders of magnitude, both signs, exact zeros and negative zeros."""
    x = rng.standard_normal(size) * 10.0 ** rng.uniform(-6, 3, size)
    x[rng.random(size) < 0.1] = 0.0
    x[rng.random(size) < 0.02] = -0.0
    return x.astype(np.float32)


# --- exponent and histogram -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2048, 1000, 2, 3])
@pytest.mark.parametrize("absmax", [1.0, 3.0, 2048.0, 2047.9999, 1e-30, 6.0, 1e30, 2.0**-140, 0.7])
def test_exponent_is_smallest_with_strict_bound(absmax: float, n: int) -> None:
    e = exponent_for(absmax, n)
    assert e == ref_exponent(absmax, n)
    assert absmax < n * 2.0**e
    assert e == MIN_EXPONENT or absmax >= n * 2.0 ** (e - 1)


def test_exponent_boundary_is_strict() -> None:
    assert exponent_for(2048.0, 2048) == 1  # 2048 == 2048 * 2**0 is not inside [0, 2048)
    assert exponent_for(np.nextafter(2048.0, 0), 2048) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_histogram_matches_reference(dtype: type) -> None:
    x = wide_data(np.random.default_rng(1), 50_000).astype(dtype)
    assert histogram(x) == ref_hist(x)


def test_histogram_is_exact_at_bin_edges() -> None:
    w = 2.0**-8  # absmax 7.99 -> exponent -8 for 2048 bins
    edges = np.array([0.0, w, 2 * w, 5 * w, 1000 * w, 2047 * w], np.float32)
    below = np.nextafter(edges[1:], np.float32(0))
    x = np.concatenate([edges, below, -edges, [7.99]]).astype(np.float32)
    h = histogram(x)
    assert h.exponent == -8
    assert h == ref_hist(x)
    assert h.counts[1] == 2 + 1  # w and -w in bin 1, the float just below 2w as well
    assert h.counts[0] == 3  # 0, -0, and the float just below w


def test_all_zero_and_tiny_data() -> None:
    h = histogram(np.zeros((4, 5), np.float32))
    assert h.exponent == MIN_EXPONENT and h.counts[0] == 20 and h.total == 20
    tiny = np.array([1e-45, -1e-40, 1e-38], np.float32)  # denormals and the smallest normal
    assert histogram(tiny) == ref_hist(tiny)
    assert histogram(np.array([], np.float32)) == Histogram.empty()


def test_integer_input_is_widened() -> None:
    x = np.arange(-5, 300, dtype=np.int32)
    assert histogram(x) == ref_hist(x)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise(value: float) -> None:
    x = np.ones(1000, np.float32)
    x[500] = value
    for stats in (new_stats(), new_stats(signed=True), new_stats(histogram=False)):
        with pytest.raises(CalibrationDataError, match="NaN" if np.isnan(value) else "infinite"):
            observe(stats, x)


def test_complex_input_is_rejected() -> None:
    with pytest.raises(CalibrationDataError):
        observe(new_stats(), np.ones(3, np.complex64))


# --- merging and batch invariance --------------------------------------------------------------------


def test_coarsen_equals_direct_binning() -> None:
    x = wide_data(np.random.default_rng(2), 20_000)
    h = histogram(x)
    for shift in (1, 2, 5, 11, 12, 40, 1000):
        e = h.exponent + shift
        direct = np.bincount(np.floor(np.abs(x.astype(np.float64)) / 2.0**e).astype(np.int64), minlength=2048)
        assert np.array_equal(h.coarsen(e).counts, direct)


def test_merge_is_commutative_associative_and_has_identity() -> None:
    rng = np.random.default_rng(3)
    a, b, c = (histogram(wide_data(rng, 3000) * s) for s in (1.0, 1e-3, 50.0))
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, Histogram.empty()) == a


def test_merge_rejects_different_bin_counts() -> None:
    with pytest.raises(CalibrationDataError, match="same num_bins"):
        merge(Histogram.empty(2048), Histogram.empty(1024))
    with pytest.raises(CalibrationDataError):
        merge_stats(new_stats(2048), new_stats(1024))
    with pytest.raises(CalibrationDataError, match="same settings"):
        merge_stats(new_stats(), new_stats(signed=True))


def _feed(stats: TensorStats, parts: list[np.ndarray]) -> TensorStats:
    for p in parts:
        stats = observe(stats, p)
    return stats


def _same_except_batches(a: TensorStats, b: TensorStats) -> bool:
    return (a.count, a.min, a.max, a.hist, a.pos, a.neg) == (b.count, b.min, b.max, b.hist, b.pos, b.neg)


@pytest.mark.parametrize("signed", [False, True])
def test_batch_size_split_and_order_do_not_matter(signed: bool) -> None:
    rng = np.random.default_rng(4)
    # magnitudes grow over the samples so that later batches force the range to double many times
    samples = [wide_data(rng, 500) * 1.7**k for k in range(40)]
    one = _feed(new_stats(signed=signed), [np.stack(samples)])
    singles = _feed(new_stats(signed=signed), samples)
    shuffled = _feed(new_stats(signed=signed), [samples[i] for i in rng.permutation(len(samples))])
    flat = np.concatenate(samples)
    uneven = _feed(new_stats(signed=signed), np.split(flat, [1, 7, 4000, 4001, 15_000]))
    for other in (singles, shuffled, uneven):
        assert _same_except_batches(one, other)
    assert one.num_batches == 1 and singles.num_batches == 40 and uneven.num_batches == 6
    ref = ref_hist(flat)
    assert one.abs_hist == ref


def test_chunked_scan_equals_one_shot(monkeypatch: pytest.MonkeyPatch) -> None:
    """observe processes big tensors chunk by chunk; chunk boundaries must not change anything."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(10_000) * np.linspace(1e-3, 1e3, 10_000)).astype(np.float32)
    full = observe(new_stats(signed=True), x)
    monkeypatch.setattr(K, "_CHUNK", 333)
    assert _same_except_batches(observe(new_stats(signed=True), x), full)
    assert observe(new_stats(), x).hist == ref_hist(x)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    num_bins=st.sampled_from([2048, 64, 5]),
    signed=st.booleans(),
)
def test_random_splits_give_identical_stats(seed: int, cuts: list[int], num_bins: int, signed: bool) -> None:
    rng = np.random.default_rng(seed)
    x = wide_data(rng, 3000)
    rng.shuffle(x)
    parts = np.split(x, sorted(cuts))
    a = _feed(new_stats(num_bins, signed=signed), parts)
    b = _feed(new_stats(num_bins, signed=signed), [x[::-1]])
    assert _same_except_batches(a, b)
    assert a.abs_hist == ref_hist(x, num_bins)
    from onnxq.calibrate import amax_entropy, amax_mse, amax_percentile

    if num_bins == 2048:
        for fn in (amax_entropy, amax_mse, amax_percentile):
            assert fn(a.abs_hist) == fn(b.abs_hist)


def test_merge_stats_equals_observing_everything() -> None:
    rng = np.random.default_rng(6)
    x, y = wide_data(rng, 4000), wide_data(rng, 3000) * 100
    for signed in (False, True):
        merged = merge_stats(observe(new_stats(signed=signed), x), observe(new_stats(signed=signed), y))
        direct = _feed(new_stats(signed=signed), [x, y])
        assert merged == direct


# --- signed halves, min/max and batch rows -----------------------------------------------------------


def test_signed_halves_match_reference_and_merge_to_abs() -> None:
    rng = np.random.default_rng(7)
    x = wide_data(rng, 20_000)
    x[:50] = -0.0  # negative zero counts as positive
    s = observe(new_stats(signed=True), x)
    pos = x[~(x < 0)]
    neg = -x[x < 0]
    assert s.pos == ref_hist(pos) and s.neg == ref_hist(neg)
    assert s.pos.total == pos.size and s.neg.total == neg.size
    assert s.abs_hist == ref_hist(x)
    assert s.hist is None and s.signed


def test_signed_with_one_sided_data() -> None:
    relu = np.maximum(np.random.default_rng(8).standard_normal(5000), 0).astype(np.float32)
    s = observe(new_stats(signed=True), relu)
    assert s.neg == Histogram.empty() and s.pos == ref_hist(relu)
    s = observe(new_stats(signed=True), -relu - 1)
    assert s.pos == Histogram.empty() and s.neg.total == relu.size


def test_minmax_count_and_batch_rows() -> None:
    s = new_stats(histogram=False)
    s = observe(s, np.array([[1.0, -2.0], [3.0, 0.5]], np.float32))
    s = observe(s, np.array([], np.float32))  # empty batch adds nothing
    s = observe(s, np.array([7.5], np.float64))
    assert (s.count, s.min, s.max, s.absmax) == (5, -2.0, 7.5, 7.5)
    assert np.array_equal(s.batch_ranges, [[-2.0, 3.0], [7.5, 7.5]])
    assert s.hist is None and not s.has_histogram
    assert new_stats().absmax == 0.0


def test_observe_does_not_modify_its_input_stats() -> None:
    s0 = observe(new_stats(), np.arange(10, dtype=np.float32))
    copy = TensorStats(s0.num_bins, s0.count, s0.min, s0.max, s0.hist, batch_ranges=s0.batch_ranges)
    observe(s0, np.full(10, 1e6, np.float32))
    assert s0 == copy
    with pytest.raises(ValueError):
        s0.hist.counts[0] = 5  # read-only


@pytest.mark.parametrize("bad", [1, 0, 2.5, True, "2048"])
def test_new_stats_rejects_bad_bin_counts(bad: object) -> None:
    with pytest.raises(ConfigError):
        new_stats(bad)  # type: ignore[arg-type]


# --- persistence -------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(9)
    stats = {
        "conv1/input": _feed(new_stats(), [wide_data(rng, 1000), wide_data(rng, 10)]),
        "relu:0": observe(new_stats(signed=True), wide_data(rng, 500)),
        "plain": observe(new_stats(512, histogram=False), wide_data(rng, 50)),
        "never seen": new_stats(),
    }
    meta = {"model": "m.onnx", "samples": "3"}
    path = tmp_path / "stats.npz"
    save_stats(path, stats, meta)
    loaded, loaded_meta = load_stats(path)
    assert loaded_meta == meta
    assert list(loaded) == list(stats)
    for name in stats:
        assert loaded[name] == stats[name], name
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"]  # no temp file left behind
    with np.load(path, allow_pickle=False) as data:  # a plain npz without pickles
        assert "names" in data.files


def test_save_overwrites_atomically_and_reports_unwritable_folder(tmp_path) -> None:
    path = tmp_path / "s.npz"
    save_stats(path, {"a": new_stats()}, {})
    save_stats(path, {"b": new_stats()}, {"k": "v"})
    assert list(load_stats(path)[0]) == ["b"]
    with pytest.raises(OutputError, match="writable"):
        save_stats(tmp_path / "missing" / "s.npz", {}, {})


def test_load_errors_are_clear(tmp_path) -> None:
    with pytest.raises(CalibrationDataError, match="does not exist"):
        load_stats(tmp_path / "nope.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(CalibrationDataError, match="not a valid onnxq statistics file"):
        load_stats(garbage)
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.arange(3))
    with pytest.raises(CalibrationDataError, match="not a valid"):
        load_stats(npy)
    good = tmp_path / "good.npz"
    save_stats(good, {"t": observe(new_stats(), np.ones(4, np.float32))}, {})
    broken = tmp_path / "broken.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.namelist():
            if item != "0/counts.npy":
                dst.writestr(item, src.read(item))
    with pytest.raises(CalibrationDataError, match="not a valid"):
        load_stats(broken)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CalibrationDataError):
        load_stats(truncated)


# --- the compiled kernel itself ---------------------------------------------------------------------


def _kernel(counting: str):
    if counting != "kernel":
        pytest.skip("kernel-only test")
    from onnxq.collect import _counting

    return _counting


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matches_floor_reference_in_both_modes(counting: str, dtype: type) -> None:
    k = _kernel(counting)
    n, e_pos, e_neg = 64, -3, 2
    rng = np.random.default_rng(11)
    edges_pos, edges_neg = np.arange(64) * 2.0**e_pos, -np.arange(64) * 2.0**e_neg
    x = np.concatenate([rng.uniform(-250, 7.99, 1001), edges_pos, edges_neg,
                        np.nextafter(edges_pos[1:], 0), [-0.0, 0.0]]).astype(dtype)
    counts = np.zeros((k.LANES, 2, n), np.int64)
    assert k.count(x, counts, n, 2.0**-e_pos, 2.0**-e_neg, True) == 0
    pos, neg = x[~(x < 0)].astype(np.float64), -x[x < 0].astype(np.float64)
    ref_pos = np.bincount(np.floor(pos / 2.0**e_pos).astype(np.int64), minlength=n)
    ref_neg = np.bincount(np.floor(neg / 2.0**e_neg).astype(np.int64), minlength=n)
    assert np.array_equal(counts.sum(0)[0], ref_pos) and np.array_equal(counts.sum(0)[1], ref_neg)
    # element k lands in lane k % LANES
    lanes = np.zeros((k.LANES, 2, n), np.int64)
    k.count(x[:1], lanes, n, 2.0**-e_pos, 2.0**-e_neg, True)
    assert lanes[0].sum() == 1 and lanes[1:].sum() == 0


def test_kernel_skips_what_is_off_the_grid_and_writes_nothing_out_of_bounds(counting: str) -> None:
    k = _kernel(counting)
    n = 8
    x = np.array([1.0, 8.0, np.nan, np.inf, -np.inf, 7.999, 1e30, -3.0], np.float32)
    guard = np.zeros(k.LANES * n + 16, np.int64)  # counts followed by a guard band that must stay 0
    counts = guard[: k.LANES * n].reshape(k.LANES, 1, n)
    assert k.count(x, counts, n, 1.0, 1.0, False) == 5  # 8.0, NaN, +Inf, -Inf, 1e30
    assert counts.sum() == 3 and not guard[k.LANES * n:].any()
    assert counts.sum(0)[0, [1, 7, 3]].tolist() == [1, 1, 1]


def test_kernel_rejects_wrong_buffers(counting: str) -> None:
    k = _kernel(counting)
    counts = np.zeros((k.LANES, 1, 8), np.int64)
    with pytest.raises(ValueError):
        k.count(np.zeros(4, np.int32), counts, 8, 1.0, 1.0, False)
    with pytest.raises(ValueError):
        k.count(np.zeros(4, np.float32), counts, 16, 1.0, 1.0, False)  # counts too small for 16 bins
    with pytest.raises(ValueError):
        k.count(np.zeros(4, np.float32), np.zeros((k.LANES, 1, 8), np.int32), 8, 1.0, 1.0, False)
    with pytest.raises(ValueError):
        k.count(np.zeros(8, np.float32)[::2], counts, 8, 1.0, 1.0, False)  # not contiguous
