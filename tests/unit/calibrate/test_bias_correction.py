"""Bias correction's arithmetic (onnxq.calibrate.bias_correction): tap means against a brute-force im2col,
expected outputs and shifts against plain numpy. The corrected models themselves: rewrite/test_correct_biases.py.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from onnxq.calibrate.bias_correction import (
    ConvGeometry,
    InputMoments,
    conv_expected,
    conv_tap_means,
    corrected_bias,
    matmul_means,
    merge_moments,
    output_shift,
)


# ----------------------------------------------------------------------------------- numpy references
def ref_im2col(x: np.ndarray, kernel, strides, pads, dilations) -> np.ndarray:
    """[N, C, taps, positions] by explicit loops over output positions (2-D only)."""
    n, c, h, w = x.shape
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    oh = (xp.shape[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (xp.shape[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    cols = np.zeros((n, c, kernel[0] * kernel[1], oh * ow))
    for i, j in itertools.product(range(oh), range(ow)):
        for t, (a, b) in enumerate(itertools.product(range(kernel[0]), range(kernel[1]))):
            r, c = i * strides[0] + a * dilations[0], j * strides[1] + b * dilations[1]
            cols[:, :, t, i * ow + j] = xp[:, :, r, c]
    return cols


def ref_conv(x: np.ndarray, w: np.ndarray, group: int, **geometry) -> np.ndarray:
    """Output [N, O, positions] of a grouped conv without bias, via the reference im2col."""
    cols = ref_im2col(x, w.shape[2:], **geometry)
    o, cg = w.shape[:2]
    out = []
    for g in range(group):
        wg = w[g * (o // group):(g + 1) * (o // group)].reshape(o // group, cg, -1)
        out.append(np.einsum("oct,nctp->nop", wg, cols[:, g * cg:(g + 1) * cg]))
    return np.concatenate(out, axis=1)


GEOMETRIES = [
    dict(kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1)),
    dict(kernel=(3, 2), strides=(2, 1), pads=(0, 1, 2, 0), dilations=(1, 2)),
    dict(kernel=(1, 1), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1)),
    dict(kernel=(1, 1), strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)),  # the pointwise fast path
    dict(kernel=(1, 1), strides=(1, 1), pads=(1, 0, 0, 1), dilations=(1, 1)),  # padded: taps read zeros
]


@pytest.mark.parametrize("geo", GEOMETRIES)
def test_tap_means_match_im2col(geo: dict) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4, 7, 6))
    g = ConvGeometry(geo["kernel"], geo["strides"], geo["dilations"], geo["pads"])
    mean, count = conv_tap_means(x, g)
    cols = ref_im2col(x, geo["kernel"], geo["strides"], geo["pads"], geo["dilations"])
    np.testing.assert_allclose(mean, cols.mean(axis=(0, 3)), rtol=1e-12, atol=1e-12)
    assert count == 3 * cols.shape[3]


def test_taps_reading_only_padding_have_zero_mean() -> None:
    x = np.random.default_rng(12).standard_normal((2, 3, 1, 4)) + 5.0
    geo = dict(kernel=(3, 3), strides=(3, 3), pads=(2, 2, 2, 2), dilations=(1, 1))
    mean, _ = conv_tap_means(x, ConvGeometry(geo["kernel"], geo["strides"], geo["dilations"], geo["pads"]))
    ref = ref_im2col(x, **geo).mean(axis=(0, 3))
    np.testing.assert_allclose(mean, ref, rtol=1e-12, atol=1e-12)
    assert not np.any(mean[:, :3]) and np.all(mean[:, 6:] != 0)  # first kernel row reads only padding


def test_same_upper_padding_resolves_as_onnx() -> None:
    g = ConvGeometry((3, 3), (2, 2), (1, 1), (0, 0, 0, 0), auto_pad="SAME_UPPER")
    assert g.resolved_pads((7, 8)) == ([1, 0], [1, 1])  # total 2 then 1: the odd pixel goes at the end
    lower = dataclasses.replace(g, auto_pad="SAME_LOWER")
    assert lower.resolved_pads((7, 8)) == ([1, 1], [1, 0])


@pytest.mark.parametrize("group", [1, 2, 4])
def test_conv_expected_is_mean_of_conv(group: int) -> None:
    rng = np.random.default_rng(1)
    geo = GEOMETRIES[1]
    x = rng.uniform(0, 1, (5, 4, 6, 6))  # positive means, as after ReLU
    w = rng.standard_normal((8, 4 // group, *geo["kernel"]))
    mean, _ = conv_tap_means(x, ConvGeometry(geo["kernel"], geo["strides"], geo["dilations"], geo["pads"]))
    ref = ref_conv(x, w, group, strides=geo["strides"], pads=geo["pads"], dilations=geo["dilations"])
    np.testing.assert_allclose(conv_expected(w, mean, group), ref.mean(axis=(0, 2)), rtol=1e-10)


def test_merge_equals_mean_over_all_batches_of_any_size() -> None:
    rng = np.random.default_rng(2)
    g = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    a, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((3, 3, 8, 4))  # spatial sizes differ
    merged = None
    for x in (a, b):
        merged = merge_moments(merged, InputMoments(*conv_tap_means(x, g)))
    cols = [ref_im2col(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)) for x in (a, b)]
    flat = np.concatenate([c.transpose(0, 3, 1, 2).reshape(-1, 3, 9) for c in cols])
    np.testing.assert_allclose(merged.mean, flat.mean(axis=0), rtol=1e-12)
    assert merged.count == flat.shape[0]


def test_matmul_means_reduce_all_but_k() -> None:
    x = np.random.default_rng(3).standard_normal((2, 5, 4))
    mean, count = matmul_means(x)
    np.testing.assert_allclose(mean, x.reshape(-1, 4).mean(0))
    assert count == 10
    np.testing.assert_allclose(matmul_means(x[0].T, trans=True)[0], x[0].mean(0))


def test_no_shift_when_nothing_is_quantized() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 3, 3, 3))
    moments = InputMoments(rng.standard_normal((3, 9)), 10)
    assert not np.any(output_shift("Conv", {}, w, w.copy(), moments))
    both = InputMoments(moments.mean, 10, moments.mean.copy())
    assert not np.any(output_shift("Conv", {}, w, w.copy(), both))
    b = rng.standard_normal(6).astype(np.float32)
    assert np.array_equal(corrected_bias(b, np.zeros(6)), b)


def test_gemm_shift_honours_trans_b_and_alpha() -> None:
    rng = np.random.default_rng(5)
    w, dw = rng.standard_normal((7, 5)), rng.standard_normal((7, 5)) * 1e-2  # [N, K] with transB
    m = rng.standard_normal(5)
    got = output_shift("Gemm", {"transB": 1, "alpha": 0.5}, w, w + dw, InputMoments(m, 1))
    np.testing.assert_allclose(got, 0.5 * (m @ dw.T))
