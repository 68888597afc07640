"""Fallback with ``select="sqnr"``: candidates ordered one at a time by output SQNR, a wider lookahead.

References: each unit's one-at-a-time SQNR recomputed from an ordinary QDQ model quantizing only that
unit (``insert_qdq`` on a restricted plan, run by onnxruntime), and hand-written score tables.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import MINMAX, ort_run, random_feeds, ref_sqnr_db, restrict_plan

import onnxq
from onnxq import api
from onnxq.analysis.fallback import SQNR_LOOKAHEAD, choose_float_layers, run_fallback
from onnxq.collect import data
from onnxq.config import FallbackRule, QuantConfig
from onnxq.records import LayerSensitivity, QuantParams, Score, SensitivityReport
from onnxq.rewrite import insert_qdq
from onnxq.testing import model_from_text

CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,3] y) {
  h1 = MatMul (x, W1)
  r1 = Relu (h1)
  h2 = MatMul (r1, W2)
  r2 = Relu (h2)
  y = MatMul (r2, W3)
}
"""


def _chain():
    """Three layers; the activation scales of the 2nd and 3rd made 4x and 16x too coarse."""
    model = model_from_text(CHAIN, weights={"W1": (4, 6), "W2": (6, 5), "W3": (5, 3)})
    pre, _ = api.prepare(model)
    config = QuantConfig(activations=MINMAX)
    qplan = onnxq.plan(pre, config)
    feeds = random_feeds((1, 4), 10, seed=3)
    stats, _ = onnxq.collect(pre, qplan, data.from_iterable(feeds), config)
    params = onnxq.solve(stats, qplan, config)
    for tensor, k in (("r1", 4), ("r2", 16)):
        p = params[tensor]
        params[tensor] = QuantParams(p.scale * k, p.zero_point, p.axis, p.dtype, p.lo, p.hi)
    return pre, qplan, params, feeds


def test_select_sqnr_ranks_one_at_a_time_by_sqnr_even_with_a_metric():
    pre, qplan, params, feeds = _chain()
    calls = []

    def metric(outputs):  # must not drive the ranking: it prefers the float form of the first layer
        calls.append(1)
        return -float(np.mean([np.abs(o[0]).sum() for o in outputs]))

    rule = FallbackRule(max_float_layers=1, max_metric_drop=0.0, select="sqnr")  # unreachable: the cap stops
    result, ranking, _ = run_fallback(pre, qplan, params, feeds, rule, metric=metric)
    assert ranking is not None and ranking.measure == "sqnr_db"
    assert all(l.only is not None and l.all_but is None and l.only.metric is None for l in ranking.layers)
    refs = [ort_run(pre, f)[0] for f in feeds]
    want = {}
    for unit in qplan.quantized_nodes:
        only = insert_qdq(pre, restrict_plan(qplan, {unit}), params)
        want[unit] = ref_sqnr_db(refs, [ort_run(only, f)[0] for f in feeds])
    for layer in ranking.layers:
        assert layer.only.sqnr_db == pytest.approx(want[layer.node], abs=0.05)  # optimized float kernels
    assert [l.node for l in ranking.layers] == sorted(want, key=want.get)  # worst alone first
    # The step is decided by SQNR on exact runs: the layer whose float form helps the outputs most.
    worst = min(want, key=want.get)
    assert result.float_nodes == (worst,) and result.final.sqnr_db > result.start.sqnr_db
    assert result.measure == "metric"  # the stopping rule's measure, still reported per step
    assert result.steps[0].bought == pytest.approx(result.final.metric - result.start.metric)


def test_select_rule_still_ranks_by_leave_one_out():
    pre, qplan, params, feeds = _chain()
    _, ranking, _ = run_fallback(pre, qplan, params, feeds, FallbackRule(max_float_layers=1))
    assert all(l.all_but is not None and l.only is None for l in ranking.layers)


class _Table:
    """Scores from a table keyed by the set of float units; unknown sets score like the start."""

    def __init__(self, units, table, start):
        self.units, self.table, self.start = tuple(units), table, start
        self.workers, self.exact, self.float_metric = 1, True, None
        self.seen = []

    def score(self, quantized):
        key = frozenset(self.units) - frozenset(quantized)
        self.seen.append(key)
        return self.table.get(key, self.start)

    def scores(self, configs, **_):
        return [self.score(c) for c in configs]


def test_select_sqnr_looks_further_down_the_order_than_the_metric_rule():
    units = [f"u{k}" for k in range(10)]
    start = Score(10.0, 0.9)
    far = units[SQNR_LOOKAHEAD - 1]  # the last candidate of the first round with select="sqnr"
    table = {frozenset([units[0]]): Score(10.5, 0.9), frozenset([far]): Score(13.0, 0.9)}
    layers = tuple(LayerSensitivity(u, "Conv", k, None, None, None, None, float(-k)) for k, u in enumerate(units))
    report = SensitivityReport("sqnr_db", 4, None, start, layers, 1, 0.0)
    wide = choose_float_layers(_Table(units, table, start), report, FallbackRule(max_float_layers=1, select="sqnr"),
                               start=start)
    assert wide.float_nodes == (far,) and wide.final.sqnr_db == 13.0
    narrow = choose_float_layers(_Table(units, table, start), report, FallbackRule(max_float_layers=1), start=start)
    assert narrow.float_nodes == (units[0],)  # four candidates per round: the far one is never tried


def test_select_sqnr_retries_a_layer_masked_by_a_dominant_error():
    units = ["a", "b", "c"]
    start = Score(8.0, 0.9)
    table = {frozenset("a"): Score(11.0, 0.95),  # the dominant error
             frozenset("b"): Score(7.9, 0.9),  # next to it, b's float form looks useless
             frozenset("c"): Score(8.0, 0.9),
             frozenset("ab"): Score(12.5, 0.96),  # once a is float, b buys 1.5 dB
             frozenset("ac"): Score(11.2, 0.95)}
    layers = tuple(LayerSensitivity(u, "Conv", k, None, None, None, None, float(-k)) for k, u in enumerate(units))
    report = SensitivityReport("sqnr_db", 4, None, start, layers, 1, 0.0)
    rule = FallbackRule(max_float_layers=2, min_sqnr_db=20.0, select="sqnr")
    result = choose_float_layers(_Table(units, table, start), report, rule, start=start)
    assert result.float_nodes == ("a", "b") and result.final.sqnr_db == 12.5
    # Selecting by the rule's measure (here the SQNR target), a layer that buys nothing is dropped for good.
    result = choose_float_layers(_Table(units, table, start), report,
                                 FallbackRule(max_float_layers=2, min_sqnr_db=20.0), start=start)
    assert result.float_nodes == ("a",)


def test_min_step_gain_stops_when_the_best_next_layer_buys_too_little():
    """Hand-written scores: a buys 3 dB, then b (the best of the rest) 0.4: with min_step_gain 1 only a goes
    float; a step that reaches the target is taken even when it buys less."""
    units = ["a", "b", "c"]
    start = Score(8.0, 0.9)
    table = {frozenset("a"): Score(11.0, 0.95), frozenset("b"): Score(8.2, 0.9), frozenset("c"): Score(8.1, 0.9),
             frozenset("ab"): Score(11.4, 0.95), frozenset("ac"): Score(11.1, 0.95)}
    layers = tuple(LayerSensitivity(u, "Conv", k, None, None, None, None, float(-k)) for k, u in enumerate(units))
    report = SensitivityReport("sqnr_db", 4, None, start, layers, 1, 0.0)
    rule = FallbackRule(max_float_layers=3, min_sqnr_db=20.0, min_step_gain=1.0)
    result = choose_float_layers(_Table(units, table, start), report, rule, start=start)
    assert result.float_nodes == ("a",) and not result.met
    without = choose_float_layers(_Table(units, table, start), report,
                                  FallbackRule(max_float_layers=3, min_sqnr_db=20.0), start=start)
    assert without.float_nodes[:2] == ("a", "b")
    reached = choose_float_layers(_Table(units, table, start), report,
                                  FallbackRule(max_float_layers=3, min_sqnr_db=11.3, min_step_gain=1.0), start=start)
    assert reached.float_nodes == ("a", "b") and reached.met
