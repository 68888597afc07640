"""Scales and zero points from ranges (the arithmetic that applies them: test_formats.py)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxq.calibrate.params import MIN_SCALE, asymmetric_params, symmetric_scale
from onnxq.errors import CalibrationDataError, ConfigError
from onnxq.formats import fake_quantize


def test_symmetric_scale() -> None:
    assert symmetric_scale(12.7) == pytest.approx(0.1)
    assert symmetric_scale(0.0) == MIN_SCALE
    assert symmetric_scale(1e-12) == MIN_SCALE
    np.testing.assert_allclose(symmetric_scale(np.array([127.0, 0.0, 254.0])), [1.0, MIN_SCALE, 2.0])
    assert symmetric_scale(255.0, qmax=255) == 1.0
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(CalibrationDataError):
            symmetric_scale(bad)


def test_min_scale_is_a_safe_float32() -> None:
    s = np.float32(MIN_SCALE)
    assert float(s) == MIN_SCALE  # exactly representable
    tiny = np.finfo(np.float32).tiny
    assert s >= tiny and np.float32(1) / s < np.finfo(np.float32).max
    assert s * s >= tiny  # products of two scales (bias scale) stay normal


def test_asymmetric_params_by_hand() -> None:
    scale, zp = asymmetric_params(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zp == 64  # round(63.75)
    assert asymmetric_params(1.0, 3.0) == (3 / 255, 0)  # range widened to include 0
    assert asymmetric_params(-3.0, -1.0) == (3 / 255, 255)
    assert asymmetric_params(-2.0, 2.0, -128, 127) == (4 / 255, 0)  # round(-127.5 - -128) -> half to even
    assert asymmetric_params(0.0, 0.0) == (MIN_SCALE, 0)
    with pytest.raises(CalibrationDataError):
        asymmetric_params(2.0, 1.0)
    with pytest.raises(ConfigError):
        asymmetric_params(-1.0, 1.0, 5, 5)


@pytest.mark.parametrize("lo,hi", [(-1.0, 3.0), (-0.37, 5.11), (-7.3, 0.2), (0.5, 2.0), (-1e-3, 1e3)])
def test_zero_is_exactly_representable(lo: float, hi: float) -> None:
    scale, zp = asymmetric_params(lo, hi)
    assert 0 <= zp <= 255
    assert fake_quantize(np.zeros(1, np.float32), scale, zp, None, 0, 255)[0] == 0.0
    x = np.linspace(min(lo, 0), max(hi, 0), 1001, dtype=np.float32)
    err = np.abs(fake_quantize(x, scale, zp, None, 0, 255) - x)
    assert err.max() <= scale * 0.5 + 1e-6 * max(abs(lo), abs(hi))  # no clipping inside the range
