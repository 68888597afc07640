"""The collector: statistics equal a numpy reference on the same activations, whatever the batching,
the memory budget or the number of passes; NaN is reported by tensor name."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
import pytest
from helpers import ort_session

from onnxq import runtime
from onnxq.cli import common as cli_common
from onnxq.collect import augment
from onnxq.collect import memory as M
from onnxq.collect import passes as P
from onnxq.collect import threads as T
from onnxq.collect.collectors import collect
from onnxq.collect.memory import split_passes, tensor_bytes
from onnxq.collect.python_sources import from_iterable
from onnxq.config import ActivationSpec, QuantConfig, Target
from onnxq.errors import CalibrationDataError, ConfigError
from onnxq.placement import plan
from onnxq.testing import model_from_text

NUM_BINS = 256

# Two convolutions and a classifier; the planned activations are x, r (Relu) and f (Gemm input).
CONV_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,10,10] x) => (float[N,5] y) {
  a = Conv <pads=[1,1,1,1]> (x, W1, B1)
  r = Relu (a)
  b = Conv <pads=[1,1,1,1]> (r, W2, B2)
  p = GlobalAveragePool (b)
  f = Flatten (p)
  y = Gemm <transB=1> (f, Wf, Bf)
}
"""
WEIGHTS = {"W1": (8, 3, 3, 3), "B1": (8,), "W2": (6, 8, 3, 3), "B2": (6,), "Wf": (5, 6), "Bf": (5,)}

# Log of a negative number is NaN: a finite input that produces a NaN activation inside the graph.
LOG_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,4] x) => (float[N,3] y) {
  l = Log (x)
  y = Gemm <transB=1> (l, W, B)
}
"""


@pytest.fixture(scope="module")
def conv_net() -> onnx.ModelProto:
    return model_from_text(CONV_NET, weights=WEIGHTS)


def feeds(n: int, batch: int = 1, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 3, 10, 10)) * rng.uniform(0.1, 8.0, (n, 1, 1, 1))).astype(np.float32)
    return [{"x": x[i : i + batch]} for i in range(0, n, batch)]


def config(method: str = "entropy", **kw) -> QuantConfig:
    return QuantConfig(activations=ActivationSpec(method=method, num_bins=NUM_BINS), **kw)


def planned(model: onnx.ModelProto, cfg: QuantConfig) -> list[str]:
    return list(dict.fromkeys(s.tensor for s in plan(model, cfg).activations()))


def activations(model: onnx.ModelProto, names: list[str], data: list[dict]) -> dict[str, np.ndarray]:
    """Every named tensor over all feeds, from onnxruntime (the test's own unoptimised session)."""
    sess = ort_session(augment.expose(model, names))
    runs = [sess.run(names, f) for f in data]
    return {n: np.concatenate([r[k].reshape(-1) for r in runs]) for k, n in enumerate(names)}


def ref_counts(values: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """|x| histogram by definition: smallest e with max|x| < n * 2**e, bin = floor(|x| / 2**e)."""
    a = np.abs(values.astype(np.float64))
    e = -127
    while a.max() >= n * 2.0**e:
        e += 1
    return np.bincount(np.floor(a / 2.0**e).astype(np.int64), minlength=n), e


def test_plan_exposes_internal_tensors(conv_net: onnx.ModelProto) -> None:
    names = planned(conv_net, config())
    assert "x" in names and "r" in names and "f" in names  # the test below covers inputs and internals


def test_histograms_equal_numpy_reference(conv_net: onnx.ModelProto) -> None:
    cfg = config()
    names = planned(conv_net, cfg)
    data = feeds(6)
    one = config(batch_size=1)  # one feed per run: one batch row per sample
    stats, samples = collect(conv_net, plan(conv_net, cfg), from_iterable(data), one, optimize=False)
    assert samples == 6 and set(stats) == set(names)
    ref = activations(conv_net, names, data)
    for name in names:
        s, v = stats[name], ref[name]
        counts, e = ref_counts(v, NUM_BINS)
        assert s.hist.exponent == e and np.array_equal(s.hist.counts, counts), name
        assert (s.count, s.min, s.max) == (v.size, float(v.min()), float(v.max())), name
        assert s.num_batches == 6


def test_minmax_equals_numpy_reference(conv_net: onnx.ModelProto) -> None:
    cfg = config("minmax", batch_size=1)
    names = planned(conv_net, cfg)
    data = feeds(5)
    stats, _ = collect(conv_net, plan(conv_net, cfg), from_iterable(data), cfg, optimize=False)
    ref = activations(conv_net, names, data)
    for name in names:
        assert not stats[name].has_histogram
        assert (stats[name].min, stats[name].max) == (float(ref[name].min()), float(ref[name].max()))
        per_batch = ref[name].reshape(5, -1)
        assert np.array_equal(stats[name].batch_ranges, np.stack([per_batch.min(1), per_batch.max(1)], 1))


def test_signed_histograms_for_asymmetric_target(conv_net: onnx.ModelProto) -> None:
    cfg = config(target=Target.ORT_CPU)
    names = planned(conv_net, cfg)
    data = feeds(4)
    stats, _ = collect(conv_net, plan(conv_net, cfg), from_iterable(data), cfg, optimize=False)
    ref = activations(conv_net, names, data)
    for name in names:
        v = ref[name]
        pos, e_pos = ref_counts(v[v >= 0], NUM_BINS)
        neg, e_neg = ref_counts(-v[v < 0], NUM_BINS) if (v < 0).any() else (np.zeros(NUM_BINS, int), -127)
        s = stats[name]
        assert (s.pos.exponent, s.neg.exponent) == (e_pos, e_neg), name
        assert np.array_equal(s.pos.counts, pos) and np.array_equal(s.neg.counts, neg), name


def test_signedness_follows_each_spec_not_the_target(conv_net: onnx.ModelProto) -> None:
    """The plan says which tensors are asymmetric; the collector keeps signed histograms for those only."""
    cfg = config()  # TensorRT: every activation symmetric
    qplan = plan(conv_net, cfg)
    first = qplan.activations()[0].tensor
    mixed = dataclasses.replace(qplan, specs=tuple(
        dataclasses.replace(s, symmetric=False) if s.tensor == first else s for s in qplan.specs))
    stats, _ = collect(conv_net, mixed, from_iterable(feeds(2)), cfg)
    assert {name for name, s in stats.items() if s.signed} == {first}
    assert all(s.has_histogram for s in stats.values())


def test_batched_equals_one_at_a_time(conv_net: onnx.ModelProto) -> None:
    cfg = config()
    one, n1 = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(8)), cfg)
    by4, n4 = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(8, batch=4)), cfg)
    auto, n_auto = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(8)), config(batch_size=3))
    assert n1 == n4 == n_auto == 8
    for name in one:
        for other in (by4[name], auto[name]):
            assert other.hist == one[name].hist
            assert (other.count, other.min, other.max) == (one[name].count, one[name].min, one[name].max)
    assert by4[next(iter(by4))].num_batches == 2


def test_memory_budget_splits_passes_with_identical_stats(conv_net: onnx.ModelProto, monkeypatch) -> None:
    cfg = config()
    qplan = plan(conv_net, cfg)
    sessions: list[list[str]] = []
    make = runtime.make_session

    def counting(model, **kw):
        sessions.append([o.name for o in model.graph.output])
        return make(model, **kw)

    monkeypatch.setattr(runtime, "make_session", counting)
    whole, n_whole = collect(conv_net, qplan, from_iterable(feeds(5)), cfg)
    assert len(sessions) == 1
    # r is 8*10*10 float32 = 3.1 KB per sample, f 24 B: a 4 KB budget (2 KB per batch in flight) splits them
    split, n_split = collect(conv_net, qplan, from_iterable(feeds(5)), cfg, memory_mb=4 / 1024)
    assert len(sessions) == 3 and n_split == n_whole == 5
    assert split == whole


def test_sizes_shape_inference_left_open_are_measured(conv_net: onnx.ModelProto, monkeypatch) -> None:
    """Without value infos every inner size is unknown; a probe run of the first feed measures them (one
    session per group of guesses), and the collection then plans by the real sizes: the same statistics."""
    cfg = config()
    bare = onnx.ModelProto()
    bare.CopyFrom(conv_net)
    del bare.graph.value_info[:]
    first = feeds(2, batch=2)[0]
    assert set(tensor_bytes(bare, ["r", "f"], first).values()) == {None}
    # guessed at UNKNOWN_TENSOR_MB each, r and f need one probe group each within a 20 MB batch budget
    sizes = M.measured(bare, {"x": 4800.0, "r": None, "f": None}, first, 20 * 2**20)
    assert sizes == {"x": 4800.0, "r": 2 * 8 * 10 * 10 * 4.0, "f": 2 * 6 * 4.0}
    sessions: list[int] = []
    make = runtime.make_session
    monkeypatch.setattr(runtime, "make_session", lambda model, **kw: sessions.append(1) or make(model, **kw))
    # a 40 MB budget: the guesses (2 x 16 MB per batch, 20 MB allowed) would take two passes
    stats, n = collect(bare, plan(conv_net, cfg), from_iterable(feeds(6)), cfg, memory_mb=40)
    assert len(sessions) == 2 + 1  # two probe groups, then one pass
    reference, _ = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(6)), cfg)
    assert n == 6 and stats == reference


def test_config_memory_budget_is_used(conv_net: onnx.ModelProto, monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(M, "split_passes", lambda t, s, budget: seen.append(budget) or [list(t)])
    collect(conv_net, plan(conv_net, config()), from_iterable(feeds(1)), config(collect_memory_mb=8))
    collect(conv_net, plan(conv_net, config()), from_iterable(feeds(1)), config(), memory_mb=2)
    assert seen == [8 * 2**20 / M.IN_FLIGHT, 2 * 2**20 / M.IN_FLIGHT]


def test_one_shot_iterator_single_pass_keeps_every_sample(conv_net: onnx.ModelProto) -> None:
    cfg = config()
    stats, samples = collect(conv_net, plan(conv_net, cfg), from_iterable(iter(feeds(3))), cfg)
    assert samples == 3 and stats["x"].count == 3 * 300


def test_one_shot_iterator_cannot_do_several_passes(conv_net: onnx.ModelProto) -> None:
    cfg = config()
    with pytest.raises(CalibrationDataError, match="memory-mb"):
        collect(conv_net, plan(conv_net, cfg), from_iterable(iter(feeds(3))), cfg, memory_mb=4 / 1024)


def test_source_that_changes_between_passes_is_rejected(conv_net: onnx.ModelProto) -> None:
    calls = []

    def shrinking():
        calls.append(1)
        return feeds(4 - len(calls))

    cfg = config()
    with pytest.raises(CalibrationDataError, match="same data each time"):
        collect(conv_net, plan(conv_net, cfg), from_iterable(shrinking), cfg, memory_mb=4 / 1024)


@pytest.mark.parametrize("method", ["entropy", "minmax"])
def test_nan_activation_names_the_tensor(method: str) -> None:
    model = model_from_text(LOG_NET, weights={"W": (3, 4), "B": (3,)})
    cfg = config(method)
    x = np.full((2, 4), 2.0, np.float32)
    x[1, 2] = -1.0  # Log(-1) = NaN, in the middle of the tensor: onnxruntime's ReduceMax would miss it
    with pytest.raises(CalibrationDataError, match=r"tensor 'l'.*NaN"):
        collect(model, plan(model, cfg), from_iterable([{"x": x}]), cfg)


def test_no_samples_is_an_error(conv_net: onnx.ModelProto) -> None:
    with pytest.raises(CalibrationDataError, match="no samples"):
        collect(conv_net, plan(conv_net, config()), from_iterable(lambda: iter([])), config())


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_bad_memory_budget(conv_net: onnx.ModelProto, bad: float) -> None:
    with pytest.raises(ConfigError, match="positive"):
        collect(conv_net, plan(conv_net, config()), from_iterable(feeds(1)), config(), memory_mb=bad)
    with pytest.raises(ConfigError, match="collect_memory_mb"):
        QuantConfig(collect_memory_mb=bad)


def test_optimized_graph_keeps_names_and_counts(conv_net: onnx.ModelProto) -> None:
    cfg = config()
    exact, _ = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(4)), cfg, optimize=False)
    fast, _ = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(4)), cfg)  # the default
    assert set(fast) == set(exact)
    for name in exact:
        assert fast[name].count == exact[name].count
        assert fast[name].hist.total == exact[name].hist.total
        np.testing.assert_allclose([fast[name].min, fast[name].max], [exact[name].min, exact[name].max],
                                   rtol=1e-5, atol=1e-6)


def test_split_passes_greedy_in_order() -> None:
    sizes = {"a": 600.0, "b": 500.0, "c": 400.0, "d": None, "e": 5000.0}
    assert split_passes(["a", "b", "c"], sizes, 1000) == [["a"], ["b", "c"]]
    assert split_passes(["a", "b", "c"], sizes, 1e9) == [["a", "b", "c"]]
    assert split_passes([], sizes, 1000) == [[]]


def test_split_passes_unknown_and_oversized(caplog) -> None:
    sizes = {"a": 10.0, "d": None, "e": 5000.0, "f": 10.0}
    unknown = M.UNKNOWN_TENSOR_MB * 2**20
    assert split_passes(["a", "d", "f"], sizes, unknown) == [["a"], ["d"], ["f"]]
    with caplog.at_level(logging.WARNING):
        assert split_passes(["a", "e", "f"], sizes, 1000) == [["a"], ["e"], ["f"]]
    assert "'e'" in caplog.text


def test_tensor_bytes_resolves_batch_from_feed(conv_net: onnx.ModelProto) -> None:
    sizes = tensor_bytes(conv_net, ["x", "r", "f", "nowhere"], {"x": np.zeros((3, 3, 10, 10), np.float32)})
    assert sizes == {"x": 3 * 300 * 4.0, "r": 3 * 800 * 4.0, "f": 3 * 6 * 4.0, "nowhere": None}


def test_cli_memory_option_reaches_config() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    cli_common.add_quant_args(parser)
    assert cli_common.build_config(parser.parse_args(["--memory-mb", "256"])).collect_memory_mb == 256
    assert cli_common.build_config(parser.parse_args([])).collect_memory_mb == QuantConfig().collect_memory_mb


@pytest.mark.parametrize("workers", [1, 3])
def test_any_number_of_counting_workers_gives_the_same_stats(conv_net, monkeypatch, workers: int) -> None:
    cfg = config()
    monkeypatch.setattr(T, "count_workers", lambda: 1)
    one, _ = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(6)), cfg)
    monkeypatch.setattr(T, "count_workers", lambda: workers)
    many, _ = collect(conv_net, plan(conv_net, cfg), from_iterable(feeds(6)), cfg)
    assert many == one


def test_partition_balances_bytes_deterministically() -> None:
    sizes = {"a": 100.0, "b": 60.0, "c": 50.0, "d": 10.0, "e": None}
    unknown = M.UNKNOWN_TENSOR_MB * 2**20
    # largest first to the lightest share: a -> 0, b -> 1, c -> 1 (60 < 100), d -> 0 (100 < 110)
    assert P.partition(["a", "b", "c", "d"], sizes, 2) == [["a", "d"], ["b", "c"]]
    assert unknown > 220  # so e (unknown size) is the largest and alone in share 0
    assert P.partition(["a", "b", "c", "d", "e"], sizes, 2) == [["e"], ["a", "b", "c", "d"]]
    assert P.partition(["a", "b"], sizes, 4) == [["a"], ["b"]]
    assert P.partition(["a", "b", "c"], sizes, 1) == [["a", "b", "c"]]
