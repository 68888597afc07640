"""Automatic batching while calibrating: used where it changes nothing, refused where it would.

Oracle: the statistics of the same feeds collected one per run (``batch_size=1``). Models that are not
batch-major (one mixes samples, one has a batch of 1 baked into a Reshape) must be detected and run one
feed at a time; the runs onnxruntime actually sees are recorded.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxq import runtime
from onnxq.collect import coalesce
from onnxq.collect.collectors import collect
from onnxq.collect.feeds import InputSpec
from onnxq.collect.python_sources import from_iterable
from onnxq.config import ActivationSpec, QuantConfig
from onnxq.placement import plan
from onnxq.testing import model_from_text

CONV_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,5] y) {
  a = Conv <pads=[1,1,1,1]> (x, W1, B1)
  r = Relu (a)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  y = Gemm <transB=1> (f, Wf, Bf)
}
"""
CONV_WEIGHTS = {"W1": (6, 3, 3, 3), "B1": (6,), "Wf": (5, 6), "Bf": (5,)}

# Subtracting the mean over axis 0 makes every sample's activations depend on the others in its batch.
MIXING_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4] x) => (float[N,3] y) {
  m = ReduceMean <axes=[0], keepdims=1> (x)
  d = Sub (x, m)
  y = Gemm <transB=1> (d, W, B)
}
"""
MIXING_WEIGHTS = {"W": (3, 4), "B": (3,)}

# Exported with a batch of 1 baked into a Reshape: a batch of 4 cannot run.
FIXED_RESHAPE_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,2,5] x) => (float[N,3] y) {
  f = Reshape (x, shape)
  y = Gemm <transB=1> (f, W, B)
}
"""
FIXED_WEIGHTS = {"W": (3, 10), "B": (3,), "shape": np.array([1, 10], np.int64)}


def config(**kw) -> QuantConfig:
    return QuantConfig(activations=ActivationSpec(method="entropy", num_bins=256), **kw)


def record_runs(monkeypatch) -> list[int]:
    """Leading dims of the feeds onnxruntime runs through the collector."""
    sizes: list[int] = []
    run = runtime.run

    def spy(session, feed, outputs=None):
        sizes.append(int(np.shape(next(iter(feed.values())))[0]))
        return run(session, feed, outputs)

    monkeypatch.setattr(runtime, "run", spy)
    return sizes


def random_feeds(n: int, shape: tuple[int, ...], seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((1, *shape)) * rng.uniform(0.5, 4.0)).astype(np.float32)} for _ in range(n)]


def assert_same_stats(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        assert a[name].hist == b[name].hist, name
        assert (a[name].count, a[name].min, a[name].max) == (b[name].count, b[name].min, b[name].max), name


def test_batch_major_model_runs_in_batches_with_the_same_statistics(monkeypatch) -> None:
    model = model_from_text(CONV_NET, weights=CONV_WEIGHTS)
    data = random_feeds(11, (3, 8, 8))
    single, n1 = collect(model, plan(model, config()), from_iterable(data), config(batch_size=1), optimize=False)
    sizes = record_runs(monkeypatch)
    auto, n_auto = collect(model, plan(model, config()), from_iterable(data), config(), optimize=False)
    # the first 4 run alone (their outputs are the reference the batched check compares against), the
    # check's batched run goes straight to the session, then the rest 4 at a time
    assert sizes == [1, 1, 1, 1, 4, 3]
    assert n1 == n_auto == 11
    assert_same_stats(auto, single)


@pytest.mark.parametrize("text, weights, shape", [(MIXING_NET, MIXING_WEIGHTS, (4,)),
                                                   (FIXED_RESHAPE_NET, FIXED_WEIGHTS, (2, 5))])
def test_models_that_are_not_batch_major_run_one_feed_at_a_time(monkeypatch, text, weights, shape) -> None:
    model = model_from_text(text, weights=weights)
    data = random_feeds(9, shape)
    single, _ = collect(model, plan(model, config()), from_iterable(data), config(batch_size=1), optimize=False)
    sizes = record_runs(monkeypatch)
    auto, n = collect(model, plan(model, config()), from_iterable(data), config(), optimize=False)
    assert sizes == [1] * 9 and n == 9
    assert_same_stats(auto, single)


def test_explicit_batch_size_and_per_batch_statistics_turn_it_off(monkeypatch) -> None:
    model = model_from_text(CONV_NET, weights=CONV_WEIGHTS)
    data = random_feeds(6, (3, 8, 8))
    sizes = record_runs(monkeypatch)
    collect(model, plan(model, config()), from_iterable(data), config(batch_size=1))
    assert sizes == [1] * 6
    sizes.clear()
    per_batch = QuantConfig(activations=ActivationSpec(method="minmax", batch_statistic="mean"))
    stats, _ = collect(model, plan(model, per_batch), from_iterable(data), per_batch)
    assert sizes == [1] * 6 and stats["x"].num_batches == 6


def test_feeds_of_different_shapes_are_not_joined(monkeypatch) -> None:
    model = model_from_text(CONV_NET.replace("float[N,3,8,8] x", "float[N,3,H,W] x"), weights=CONV_WEIGHTS)
    data = [{"x": np.ones((1, 3, 8 + k % 2, 8), np.float32) * (k + 1)} for k in range(6)]
    sizes = record_runs(monkeypatch)
    _, n = collect(model, plan(model, config()), from_iterable(data), config())
    assert sizes == [1] * 6 and n == 6


def test_coalesce_groups_consecutive_joinable_feeds() -> None:
    a = {"x": np.zeros((1, 2), np.float32)}
    b = {"x": np.zeros((1, 3), np.float32)}
    groups = list(coalesce.coalesce([a, a, a, b, b, a], limit=2))
    assert [n for _, n in groups] == [2, 1, 2, 1]
    assert [g["x"].shape for g, _ in groups] == [(2, 2), (1, 2), (2, 3), (1, 2)]


def test_batch_dim_must_be_dynamic_and_shared() -> None:
    f32 = np.float32
    assert coalesce.batch_dim_shared([InputSpec("a", ("N", 3), f32), InputSpec("b", ("N",), f32)])
    assert coalesce.batch_dim_shared([InputSpec("a", (None, 3), f32)])
    assert not coalesce.batch_dim_shared([InputSpec("a", (1, 3), f32)])
    assert not coalesce.batch_dim_shared([InputSpec("a", ("N", 3), f32), InputSpec("b", ("M",), f32)])
    assert not coalesce.batch_dim_shared([InputSpec("a", None, f32)])


def test_same_when_batched_compares_values_and_shapes() -> None:
    feeds = [{"x": np.full((1, 2), float(k), np.float32)} for k in range(3)]
    singles = [[f["x"] * 2] for f in feeds]
    assert coalesce.same_when_batched(lambda f: [f["x"] * 2], feeds, singles)
    assert not coalesce.same_when_batched(lambda f: [f["x"] * 2 - f["x"].mean(0)], feeds, singles)
    assert not coalesce.same_when_batched(lambda f: [f["x"][:1] * 2], feeds, singles)

    def fails(feed):
        raise RuntimeError("cannot reshape")

    assert not coalesce.same_when_batched(fails, feeds, singles)


def test_model_text_fixtures_are_valid() -> None:
    for text, weights in [(MIXING_NET, MIXING_WEIGHTS), (FIXED_RESHAPE_NET, FIXED_WEIGHTS)]:
        onnx.checker.check_model(model_from_text(text, weights=weights), full_check=True)
