"""onnxq.analysis.compare and the streaming error sums, checked against plain numpy and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import POOLED_NET, POOLED_NET_WEIGHTS, ort_run, pooled_net, random_feeds, ref_sqnr_db
from onnx import numpy_helper

from onnxq import api
from onnxq.analysis.compare import compare
from onnxq.analysis.dump import dump_tensors
from onnxq.analysis.metrics import ErrorSums, accumulate, loss_pct
from onnxq.analysis.tolerances import Tolerances, check_tolerances
from onnxq.collect import data
from onnxq.errors import ConfigError, UnsupportedModelError
from onnxq.records.compare import CompareReport, OutputComparison
from onnxq.testing import model_from_text


def _ref_cos(a, b):
    a, b = np.concatenate([np.ravel(x) for x in a]).astype(np.float64), np.concatenate(
        [np.ravel(x) for x in b]).astype(np.float64)
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def models():
    fm = pooled_net()
    feeds = random_feeds((1, 3, 8, 8), 6, seed=1)
    qm = api.quantize(fm, data.from_iterable(feeds)).model
    return fm, qm, feeds


# ------------------------------------------------------------------------------------------ error sums

def test_error_sums_match_numpy_over_concatenated_batches():
    rng = np.random.default_rng(0)
    refs = [rng.standard_normal((2, 5)) for _ in range(4)]
    xs = [r + 0.1 * rng.standard_normal(r.shape) for r in refs]
    xs[1][0] = refs[1][0][::-1]  # one row whose argmax surely moves
    s = ErrorSums()
    for r, x in zip(refs, xs):
        s = accumulate(s, r, x, top1=True)
    assert s.sqnr_db == pytest.approx(ref_sqnr_db(refs, xs), rel=1e-12)
    assert s.cosine == pytest.approx(_ref_cos(refs, xs), rel=1e-12)
    assert s.max_abs == pytest.approx(max(np.max(np.abs(r - x)) for r, x in zip(refs, xs)))
    agree = np.mean(np.concatenate(refs).argmax(1) == np.concatenate(xs).argmax(1))
    assert s.top1 == pytest.approx(agree) and agree < 1.0
    whole = accumulate(ErrorSums(), np.concatenate(refs), np.concatenate(xs), top1=True)
    assert whole.sqnr_db == pytest.approx(s.sqnr_db, rel=1e-12) and whole.top1 == s.top1


def test_float32_fast_path_matches_float64_reference():
    rng = np.random.default_rng(3)
    ref = (rng.standard_normal(3 * 4096 + 77) * 5 + 2).astype(np.float32)  # chunks plus a tail
    x = (ref + 0.01 * rng.standard_normal(ref.size)).astype(np.float32)
    s = accumulate(ErrorSums(), ref, x)
    assert s.sqnr_db == pytest.approx(ref_sqnr_db([ref], [x]), rel=1e-6)
    assert s.cosine == pytest.approx(_ref_cos([ref], [x]), rel=1e-9)
    assert s.max_abs == np.abs(ref.astype(np.float64) - x).max()


def test_float32_overflow_falls_back_to_float64():
    # attention masks hold float32 min: squares overflow float32 but not float64
    ref = np.zeros(2 * 4096, np.float32)
    ref[::2] = np.finfo(np.float32).min
    x = np.where(ref < 0, np.float32(-20.0), ref).astype(np.float32)  # the mask clipped by a quantizer
    s = accumulate(ErrorSums(), ref, x)
    assert np.isfinite(s.ref_sq) and s.sqnr_db == pytest.approx(ref_sqnr_db([ref], [x]), abs=1e-6)
    assert s.sqnr_db < 1.0  # wrecked, not "200 dB"


def test_looks_like_logits():
    from onnxq.analysis.metrics import looks_like_logits

    assert looks_like_logits((1, 1000)) and looks_like_logits((4, 1, 2))
    assert not looks_like_logits((1, 1, 640, 640)) and not looks_like_logits((1, 3549, 85))
    assert not looks_like_logits((1, 1)) and not looks_like_logits((10,))


def test_error_sums_edge_cases():
    z = np.zeros(4)
    assert accumulate(ErrorSums(), z, z).sqnr_db == 200.0 and accumulate(ErrorSums(), z, z).cosine == 1.0
    assert accumulate(ErrorSums(), z, np.ones(4)).sqnr_db == -200.0
    assert ErrorSums().top1 is None
    with pytest.raises(ValueError):
        accumulate(ErrorSums(), np.zeros(3), np.zeros(4))


def test_loss_pct():
    assert loss_pct(80.0, 76.0) == pytest.approx(5.0)
    assert loss_pct(-2.0, -1.0) == pytest.approx(50.0)
    assert loss_pct(0.0, 0.0) == 0.0 and loss_pct(0.0, 1.0) == float("inf")


# ---------------------------------------------------------------------------------------------- compare

def test_outputs_match_onnxruntime_reference(models):
    fm, qm, feeds = models
    report = compare(fm, qm, data.from_iterable(feeds))
    f = [ort_run(fm, feed)[0] for feed in feeds]
    q = [ort_run(qm, feed)[0] for feed in feeds]
    (out,) = report.outputs
    assert out.name == "y" and out.shape == (1, 10) and report.samples == len(feeds)
    assert out.sqnr_db == pytest.approx(ref_sqnr_db(f, q), rel=1e-9)
    assert out.cosine == pytest.approx(_ref_cos(f, q), rel=1e-9)
    assert out.max_abs == pytest.approx(max(np.abs(a - b).max() for a, b in zip(f, q)), rel=1e-6)
    agree = 100 * np.mean([a.argmax() == b.argmax() for a, b in zip(f, q)])
    assert out.top1 == pytest.approx(agree)
    assert 15 < out.sqnr_db < 200 and report.layers == () and report.metric is None


def test_identical_models_are_perfect(models):
    fm, _, feeds = models
    report = compare(fm, fm, data.from_iterable(feeds), per_layer=True)
    assert report.outputs[0].sqnr_db == 200.0 and report.outputs[0].top1 == 100.0
    assert all(r.sqnr_db == 200.0 and r.role == "float" for r in report.layers)
    assert {r.tensor for r in report.layers} == {"c", "r", "p", "f"}  # outputs are reported separately


def _fake_quant(x, scale, zp, axis=None, lo=-128, hi=127):
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (np.clip(np.rint(x / scale) + zp, lo, hi) - zp) * scale


def test_per_layer_against_numpy_fake_quantization(models):
    fm, qm, feeds = models
    report = compare(fm, qm, data.from_iterable(feeds), per_layer=True)
    rows = {r.tensor: r for r in report.layers}
    assert [r.sqnr_db for r in report.layers] == sorted(r.sqnr_db for r in report.layers)
    assert rows["x"].role == "activation" and rows["W"].role == "weight" and rows["c"].role == "float"
    assert rows["c"].op_type == "Conv" and rows["c"].node == "Conv_0"
    inits = {t.name: numpy_helper.to_array(t) for t in qm.graph.initializer}
    # input x: its own Q/DQ is the only error; numpy fake quantization with the model's scale
    xs = [f["x"] for f in feeds]
    xq = [_fake_quant(x.astype(np.float64), inits["x_scale"].astype(np.float64), 0.0) for x in xs]
    assert rows["x"].sqnr_db == pytest.approx(ref_sqnr_db(xs, xq), abs=1e-3)
    assert rows["x"].pre_qdq_sqnr_db == 200.0
    # weight W: per-channel (axis 0), narrow or not, the numpy reference gives the same SQNR
    wq = _fake_quant(inits["W"].astype(np.float64), inits["W_scale"].astype(np.float64),
                     np.zeros(8), axis=0)
    assert rows["W"].sqnr_db == pytest.approx(ref_sqnr_db([inits["W"]], [wq]), abs=1e-3)
    # a float tensor: SQNR of the quantized model's own value, fetched independently
    c_f = [ort_run(_with_output(fm, "c"), f, ["c"])[0] for f in feeds]
    c_q = [ort_run(_with_output(qm, "c"), f, ["c"])[0] for f in feeds]
    assert rows["c"].sqnr_db == pytest.approx(ref_sqnr_db(c_f, c_q), rel=1e-6)


def _with_output(model, name):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.add().name = name
    return m


def test_optimized_mode_and_metric(models):
    fm, qm, feeds = models
    seen = {}

    def metric(outs_f, outs_q):
        seen["shape"] = (len(outs_f), len(outs_f[0]), outs_f[0][0].shape)
        return float(np.mean([o[0].mean() for o in outs_f])), float(np.mean([o[0].mean() for o in outs_q]))

    report = compare(fm, qm, data.from_iterable(feeds), optimize=True, metric=metric)
    assert report.optimized and seen["shape"] == (len(feeds), 1, (1, 10))
    f_mean = np.mean([ort_run(fm, f)[0].mean() for f in feeds])
    assert report.metric.float_score == pytest.approx(f_mean, rel=1e-6)
    m = report.metric
    assert m.loss_pct == pytest.approx(abs(m.quant_score - m.float_score) / abs(m.float_score) * 100)


def test_batched_feeds_count_samples(models):
    fm, qm, feeds = models
    batch = [{"x": np.concatenate([f["x"] for f in part])} for part in (feeds[:3], feeds[3:])]
    a = compare(fm, qm, data.from_iterable(feeds))
    b = compare(fm, qm, data.from_iterable(batch))
    assert b.samples == 6 and b.outputs[0].sqnr_db == pytest.approx(a.outputs[0].sqnr_db, rel=1e-6)
    assert b.outputs[0].top1 == pytest.approx(a.outputs[0].top1)


def test_mismatched_models_are_rejected(models):
    fm, qm, feeds = models
    other = model_from_text(POOLED_NET.replace("x)", "z)").replace("(x,", "(z,"),
                            weights=POOLED_NET_WEIGHTS)
    with pytest.raises(UnsupportedModelError, match="different inputs"):
        compare(fm, other, data.from_iterable(feeds))
    renamed = model_from_text(POOLED_NET.replace("y)", "out)").replace("y = ", "out = "),
                              weights=POOLED_NET_WEIGHTS)
    with pytest.raises(UnsupportedModelError, match="no output name"):
        compare(fm, renamed, data.from_iterable(feeds))


def _report(**kw):
    out = OutputComparison("y", (1, 10), kw.pop("sqnr", 30.0), kw.pop("cos", 0.999), 0.1,
                           kw.pop("top1", 99.0))
    return CompareReport("a", "b", "d", 1, False, (out,), **kw)


def test_check_tolerances():
    assert check_tolerances(_report(), Tolerances(min_sqnr_db=25, min_cosine=0.99, min_top1_pct=98)) == ()
    lines = check_tolerances(_report(sqnr=20.0, cos=0.9, top1=90.0),
                             Tolerances(min_sqnr_db=25, min_cosine=0.99, min_top1_pct=98))
    assert len(lines) == 3 and "SQNR 20.00 dB" in lines[0] and "top-1" in lines[2]
    with pytest.raises(ConfigError, match="logits"):
        check_tolerances(_report(top1=None), Tolerances(min_top1_pct=98))
    with pytest.raises(ConfigError, match="metric"):
        check_tolerances(_report(), Tolerances(max_loss_pct=1))


def test_nan_output_violates_tolerances():
    assert check_tolerances(_report(sqnr=float("nan")), Tolerances(min_sqnr_db=0))


def test_dump_tensors_gives_every_node_output(models):
    fm, qm, feeds = models
    dumps = list(dump_tensors(fm, qm, data.from_iterable(feeds), limit=2))
    assert len(dumps) == 2
    f_vals, q_vals = dumps[1]
    assert set(f_vals) == {o for n in fm.graph.node for o in n.output}
    assert set(q_vals) == {o for n in qm.graph.node for o in n.output}
    assert q_vals["x_q"].dtype == np.int8
    np.testing.assert_array_equal(f_vals["y"], ort_run(fm, feeds[1])[0])
