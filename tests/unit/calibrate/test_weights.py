"""Per-channel weight ranges: max, percentile and MSE against plain references."""

from __future__ import annotations

import numpy as np
import pytest

from onnxq.calibrate.params import MIN_SCALE, symmetric_scale
from onnxq.calibrate.weights import weight_amax
from onnxq.errors import ConfigError, UnsupportedModelError


def _channels(w: np.ndarray, axis: int) -> list[np.ndarray]:
    return [np.take(w, c, axis=axis).reshape(-1) for c in range(w.shape[axis])]


@pytest.mark.parametrize("shape,axis", [((8, 3, 3, 3), 0), ((16, 32), 1), ((4, 6, 5), -1), ((3, 5, 2, 2), 1)])
def test_max_per_channel(shape: tuple[int, ...], axis: int) -> None:
    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = weight_amax(w, axis)
    assert got.shape == (shape[axis],)
    assert got.tolist() == [float(np.max(np.abs(c))) for c in _channels(w, axis)]
    assert weight_amax(w).shape == () and float(weight_amax(w)) == float(np.abs(w).max())


def test_percentile_per_channel() -> None:
    w = np.random.default_rng(1).laplace(size=(6, 1000))
    got = weight_amax(w, 0, "percentile", percentile=99.0)
    for c, row in enumerate(np.abs(w)):
        srt = np.sort(row)
        pos = 0.99 * (row.size - 1)  # linear interpolation between the sorted |w|
        lo = int(np.floor(pos))
        ref = srt[lo] + (pos - lo) * (srt[lo + 1] - srt[lo])
        assert got[c] == pytest.approx(ref, rel=1e-12)
    assert np.array_equal(weight_amax(w, 0, "percentile", percentile=100), weight_amax(w, 0))


def test_percentile_clips_small_channels_too() -> None:
    """A 3x3x3 conv channel has 27 weights: 99.99 % must still clip (the old inverted-cdf rule gave the
    max for any channel under 10 000 weights), by 99.99 % x 26 of the way down to the second largest."""
    w = np.random.default_rng(2).standard_normal((4, 3, 3, 3))
    top = weight_amax(w, 0)
    got = weight_amax(w, 0, "percentile", percentile=99.99)
    assert np.all(got < top)
    for c, row in enumerate(np.abs(w).reshape(4, -1)):
        second, first = np.sort(row)[-2:]
        assert got[c] == pytest.approx(second + (0.9999 * 26 - 25) * (first - second), rel=1e-12)


def ref_mse(row: np.ndarray, qmax: int, ratios: np.ndarray) -> float:
    """Brute force: the candidate amax with the smallest squared fake-quantization error (ties: larger)."""
    best, best_err = None, np.inf
    top = float(np.abs(row).max())
    for r in ratios:
        amax = top * r
        s = np.float32(amax / qmax)
        q = np.clip(np.round(row / s), -qmax, qmax) * s
        err = float(np.sum((row.astype(np.float64) - q) ** 2))
        if err < best_err:
            best, best_err = amax, err
    return best


@pytest.mark.parametrize("qmax", [127, 7])
def test_mse_per_channel_matches_brute_force(qmax: int) -> None:
    rng = np.random.default_rng(2)
    w = rng.laplace(size=(5, 2000)).astype(np.float32)
    got = weight_amax(w, 0, "mse", qmax=qmax, num_candidates=41, min_ratio=0.2)
    ratios = np.linspace(1.0, 0.2, 41)
    for c in range(5):
        assert got[c] == pytest.approx(ref_mse(w[c], qmax, ratios), rel=1e-12)
        # the chosen amax never does worse than the max
        q = {a: np.clip(np.round(w[c] / np.float32(a / qmax)), -qmax, qmax) * np.float32(a / qmax)
             for a in (got[c], np.abs(w[c]).max())}
        errs = [np.sum((q[a] - w[c]) ** 2) for a in q]
        assert errs[0] <= errs[-1] * (1 + 1e-6)
    if qmax == 7:  # at 4 bits a Laplace tail is clipped (ACIQ: about 5 b for 4 bits)
        assert np.all(got < 0.9 * np.abs(w).max(axis=1))


def test_dead_channel_gets_the_minimum_scale() -> None:
    w = np.ones((3, 4), np.float32)
    w[1] = 0
    for method in ("max", "mse", "percentile"):
        amax = weight_amax(w, 0, method)
        assert amax[1] == 0.0 and amax[0] == 1.0
        assert symmetric_scale(amax)[1] == MIN_SCALE


def test_bad_requests() -> None:
    w = np.ones((2, 3), np.float32)
    with pytest.raises(ConfigError, match="max, mse, percentile"):
        weight_amax(w, 0, "entropy")
    with pytest.raises(ConfigError, match="percentile"):
        weight_amax(w, 0, "max", percentile=99)
    with pytest.raises(ConfigError):
        weight_amax(w, 2)
    with pytest.raises(ConfigError):
        weight_amax(w, 0, "mse", min_ratio=0)
    with pytest.raises(ConfigError):
        weight_amax(w, 0, "percentile", percentile=0)
    bad = w.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UnsupportedModelError, match="NaN"):
        weight_amax(bad, 0)
    with pytest.raises(UnsupportedModelError):
        weight_amax(np.zeros((0, 3), np.float32), 0)
