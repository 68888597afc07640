"""The pipeline's shape (issue 13): a quantize run imports the preprocessed model into onnx-graphsurgeon
once and exports it once; solving needs only the statistics, the plan and the config; bias correction
has one home whether the statistics are collected or given."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from helpers import MINMAX, residual_net

import onnxq
from onnxq.api import prepare
from onnxq.calibrate.solve import solve
from onnxq.config import QuantConfig, Target, WeightSpec
from onnxq.placement import plan


def _feeds(n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


class _Counter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.imports = self.exports = 0
        real_import, real_export = gs.import_onnx, gs.export_onnx

        def counted_import(*args, **kwargs):
            self.imports += 1
            return real_import(*args, **kwargs)

        def counted_export(*args, **kwargs):
            self.exports += 1
            return real_export(*args, **kwargs)

        monkeypatch.setattr(gs, "import_onnx", counted_import)
        monkeypatch.setattr(gs, "export_onnx", counted_export)


@pytest.mark.parametrize("target", [Target.TENSORRT, Target.ORT_CPU])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_quantize_imports_and_exports_the_graph_once(monkeypatch, target, bias_correction):
    model = residual_net(1)
    config = QuantConfig(activations=MINMAX, target=target, weights=WeightSpec(bias_correction=bias_correction))
    counter = _Counter(monkeypatch)
    prepare(model)  # preprocessing's own passes, counted apart
    imports, exports = counter.imports, counter.exports
    result = onnxq.quantize(model, _feeds(), config)
    assert (counter.imports - 2 * imports, counter.exports - 2 * exports) == (1, 1)
    assert any(n.op_type == "QuantizeLinear" for n in result.model.graph.node)


def test_solve_reads_no_graph(monkeypatch):
    model, _ = prepare(residual_net(1))
    config = QuantConfig(activations=MINMAX)
    qplan = plan(model, config)
    stats = onnxq.collect(model, qplan, onnxq.data.from_iterable(_feeds()), config)[0]
    expected = solve(stats, qplan, config)

    def refuse(*args, **kwargs):
        raise AssertionError("solve imported a graph")

    monkeypatch.setattr(gs, "import_onnx", refuse)
    again = solve(stats, qplan, config)
    assert expected.keys() == again.keys()
    for key in expected:
        np.testing.assert_array_equal(expected[key].scale, again[key].scale)
    weight = next(s for s in qplan.weights())
    w = qplan.values[weight.tensor]
    np.testing.assert_allclose(expected[weight.key].scale, np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127,
                               rtol=1e-6)


def test_plan_from_json_has_no_weights_and_solve_says_so():
    model, _ = prepare(residual_net(1))
    qplan = plan(model)
    again = type(qplan).from_dict(qplan.to_dict())
    assert again == qplan and not again.values
    with pytest.raises(ValueError, match="carries no values"):
        solve({}, type(qplan)(qplan.target, tuple(qplan.weights()), (), ()), QuantConfig(activations=MINMAX))


@pytest.mark.parametrize("target", [Target.TENSORRT, Target.ORT_CPU])
def test_bias_correction_from_given_statistics_is_the_same_model(target):
    """The moments come from the calibration run, or from a pass of their own when statistics are given:
    the same data gives the same corrected model, byte for byte."""
    model = residual_net(1)
    config = QuantConfig(activations=MINMAX, target=target, weights=WeightSpec(bias_correction=True))
    feeds = _feeds(6)
    collected = onnxq.quantize(model, feeds, config)
    given = onnxq.quantize(model, feeds, config, stats=collected.stats)
    plain = onnxq.quantize(model, feeds, QuantConfig(activations=MINMAX, target=target, weights=WeightSpec(bias_correction=False)))
    assert given.model.SerializeToString() == collected.model.SerializeToString()
    assert plain.model.SerializeToString() != collected.model.SerializeToString()  # the correction did act
    assert given.report.samples == collected.report.samples == 6


@pytest.mark.parametrize("method", ["minmax", "auto"])
def test_check_compares_with_the_float_outputs_the_calibration_run_fetched(monkeypatch, method):
    """The final check's float outputs come from the calibration session (no float session of its own),
    and give the figures a fresh float session gives, up to kernel rounding."""
    import onnxruntime as ort

    from onnxq import api
    from onnxq.analysis.metrics import output_similarity

    model, feeds = residual_net(), _feeds(50)
    own_sessions = []
    real = api._outputs
    monkeypatch.setattr(api, "_outputs", lambda m, f: own_sessions.append(1) or real(m, f))
    config = QuantConfig(activations=onnxq.ActivationSpec(method=method))
    result = onnxq.quantize(model, feeds, config)
    assert own_sessions == []
    float_out = ort.InferenceSession(model.SerializeToString()).run(None, feeds[0])
    quant_out = ort.InferenceSession(result.model.SerializeToString()).run(None, feeds[0])
    expected = output_similarity(float_out, quant_out)
    assert result.report.check["output_sqnr_db"] == pytest.approx(expected["output_sqnr_db"], abs=1e-3)
    assert result.report.check["output_cosine"] == pytest.approx(expected["output_cosine"], abs=1e-6)
