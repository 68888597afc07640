"""Depthwise input equalization: the float function is unchanged (onnxruntime on both graphs), every
channel ends at the same range, and the quantized model gets closer to float on channel ranges that
differ by 1000x (output SQNR measured by onnxruntime against the float model)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MINMAX, ort_run, random_feeds, save_arrays
from onnx import numpy_helper

from onnxq import api
from onnxq.analysis.activation_means import channel_maxima
from onnxq.collect.augment import expose
from onnxq.collect.python_sources import from_iterable
from onnxq.config import QuantConfig, Target
from onnxq.errors import ConfigError
from onnxq.graph.usage import unused_initializers
from onnxq.rewrite.equalize import MIN_SCALE, channel_scales, depthwise_inputs, equalize, shared_scale_loss_bits
from onnxq.testing import model_from_text

C = 6
# A pointwise conv makes channels of very different ranges (its weights scale them), then SiLU, then a
# depthwise conv (group = C) and one with a channel multiplier of 2 (group = C, 2C outputs), both reading s;
# a grouped conv that is not depthwise (group 3, 2 input channels per group) reads s too.
NET = f"""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,{C},8,8] y, float[N,{2 * C},8,8] z, float[N,3,8,8] u) {{
  a = Conv (x, W0, B0)
  sg = Sigmoid (a)
  s = Mul (a, sg)
  y = Conv <group={C}, pads=[1,1,1,1]> (s, W1, B1)
  z = Conv <group={C}, pads=[1,1,1,1]> (s, W2, B2)
  u = Conv <group=3, pads=[1,1,1,1]> (s, W3, B3)
}}
"""


def net() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((C, 3, 1, 1)).astype(np.float32)
    w0 *= np.logspace(-3, 0, C, dtype=np.float32)[:, None, None, None] * 20  # channel ranges 0.02 .. 20
    weights = {"W0": w0, "B0": np.zeros(C, np.float32), "W1": (C, 1, 3, 3), "B1": (C,), "W2": (2 * C, 1, 3, 3),
               "B2": (2 * C,), "W3": (3, 2, 3, 3), "B3": (3,)}
    return model_from_text(NET, weights=weights)


def feeds(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    return random_feeds((1, 3, 8, 8), n, seed)


def run(model: onnx.ModelProto, feed: dict, outputs: list[str] | None = None) -> list[np.ndarray]:
    """onnxruntime's reference kernels; ``outputs`` may name internal tensors."""
    return ort_run(expose(model, outputs) if outputs else model, feed, outputs)


def test_finds_depthwise_convs_only() -> None:
    found = depthwise_inputs(net())
    assert [(d.tensor, d.channels) for d in found] == [("s", C)]
    names = {n.output[0]: n.name for n in net().graph.node}
    assert set(found[0].convs) == {names["y"], names["z"]}  # not the grouped conv writing u
    assert depthwise_inputs(net(), nodes={names["y"]})[0].convs == (names["y"],)


def test_channel_scales_by_hand() -> None:
    got = channel_scales(np.array([1.0, 4.0, 0.0, np.nan, 1e-9]))
    # a channel never seen non-zero keeps its scale; NaN counts as the largest; a tiny one is floored
    np.testing.assert_allclose(got, [0.25, 1.0, 1.0, 1.0, MIN_SCALE])
    np.testing.assert_array_equal(channel_scales(np.zeros(3)), np.ones(3))


def test_equalized_model_computes_the_same_and_evens_the_channels() -> None:
    model = net()
    data = feeds(4)
    inputs = depthwise_inputs(model)
    maxima = {"s": np.max([np.abs(run(model, f, ["s"])[0]).max(axis=(0, 2, 3)) for f in data], axis=0)}
    assert maxima["s"].max() / maxima["s"].min() > 100  # the case this is for
    eq = equalize(model, inputs, maxima)
    onnx.checker.check_model(eq, full_check=True)
    for f in data:
        for want, got in zip(run(model, f), run(eq, f)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    mul_out = next(n.output[0] for n in eq.graph.node if n.op_type == "Mul" and n.input[0] == "s")
    per_channel = np.max([np.abs(run(eq, f, [mul_out])[0]).max(axis=(0, 2, 3)) for f in data], axis=0)
    np.testing.assert_allclose(per_channel, maxima["s"].max(), rtol=1e-5)
    # the input model is untouched and the grouped conv still reads the original tensor
    assert all(n.input[0] == "s" for n in model.graph.node if n.op_type == "Conv" and n.input[0] != "x")
    u_conv = next(n for n in eq.graph.node if n.output[0] == "u")
    assert u_conv.input[0] == "s"


def test_collected_maxima_equal_numpy() -> None:
    model = net()
    data = feeds(5)
    got = channel_maxima(model, ["s"], from_iterable(data), QuantConfig(activations=MINMAX))
    want = np.max([np.abs(run(model, f, ["s"])[0]).max(axis=(0, 2, 3)) for f in data], axis=0)
    np.testing.assert_allclose(got["s"], want, rtol=1e-5)


def _worst_channel_sqnr(model: onnx.ModelProto, quant: onnx.ModelProto, data: list[dict]) -> float:
    """SQNR (dB) of the depthwise output ``y``, per channel, worst channel: small channels are the victims."""
    want = np.concatenate([run(model, f, ["y"])[0] for f in data]).astype(np.float64)
    got = np.concatenate([run(quant, f, ["y"])[0] for f in data]).astype(np.float64)
    signal = (want**2).sum(axis=(0, 2, 3))
    noise = ((want - got) ** 2).sum(axis=(0, 2, 3))
    return float(np.min(10 * np.log10(signal / noise)))


def test_quantize_with_equalize_is_closer_to_float() -> None:
    model = net()
    calib, check = feeds(16), feeds(8, seed=2)
    plain = api.quantize(model, calib, QuantConfig(activations=MINMAX))
    eq = api.quantize(model, calib, QuantConfig(activations=MINMAX, equalize=True))
    assert any("equalized" in note for note in eq.report.preprocess)
    assert sum(n.op_type == "Mul" for n in eq.model.graph.node) == sum(n.op_type == "Mul" for n in model.graph.node) + 1
    assert _worst_channel_sqnr(model, eq.model, check) > _worst_channel_sqnr(model, plain.model, check) + 10
    # measuring the channel maxima runs the model: a timing of its own, not "prepare"
    assert "equalize" in eq.report.timings and "equalize" not in plain.report.timings
    # deterministic bytes
    again = api.quantize(model, calib, QuantConfig(activations=MINMAX, equalize=True))
    assert again.model.SerializeToString() == eq.model.SerializeToString()


def test_ort_cpu_target_and_missing_data() -> None:
    model = net()
    same = api.quantize(model, feeds(4), QuantConfig(activations=MINMAX, target=Target.ORT_CPU, equalize=True))
    assert not any("equalized" in note for note in same.report.preprocess)
    with pytest.raises(ConfigError, match="equalize needs calibration data"):
        api.equalized(api.prepare(model)[0], QuantConfig(activations=MINMAX, equalize=True), None)


def test_weights_are_scaled_per_output_channel_with_multiplier() -> None:
    model = net()
    inputs = depthwise_inputs(model)
    maxima = {"s": np.arange(1.0, C + 1.0)}
    eq = equalize(model, inputs, maxima)
    weights = {t.name: numpy_helper.to_array(t) for t in eq.graph.initializer}
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    z_conv = next(n for n in eq.graph.node if n.output[0] == "z")
    scales = np.arange(1.0, C + 1.0) / C
    np.testing.assert_allclose(weights[z_conv.input[1]], original["W2"] * np.repeat(scales, 2)[:, None, None, None],
                               rtol=1e-6)
    assert "W2" not in weights  # no other node reads it: a dead initializer breaks onnxruntime sessions


def test_scales_come_from_every_calibration_sample() -> None:
    """A channel quiet in the first samples and loud in a late one must not be scaled up as if quiet."""
    model = net()
    data = feeds(40)
    pre, _ = api.prepare(model)
    loud = {"x": data[-1]["x"] * 50.0}  # the last sample drives every channel far past the others
    eq = api.equalized(pre, QuantConfig(activations=MINMAX, equalize=True), from_iterable(data[:-1] + [loud]))
    inv = next(numpy_helper.to_array(t) for t in eq.graph.initializer if t.name.startswith("s_equalize_scale"))
    want = np.max([np.abs(run(model, f, ["s"])[0]).max(axis=(0, 2, 3)) for f in data[:-1] + [loud]], axis=0)
    np.testing.assert_allclose(inv.ravel(), 1.0 / channel_scales(want), rtol=1e-5)


# Real models' depthwise weights are over runtime.IN_MEMORY_MIN_BYTES (1 KB), so onnxruntime gets them in
# memory; the original weight left behind as a dead initializer made every session on the equalized graph
# fail ("Failed to find existing initializer"). 64 channels of 3x3 float32: 2.3 KB.
BIG = 64
BIG_NET = f"""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x{{extra_in}}) => (float[N,{BIG},8,8] y{{extra_out}}) {{
  a = Conv (x, W0, B0)
  sg = Sigmoid (a)
  s = Mul (a, sg)
  y = Conv <group={BIG}, pads=[1,1,1,1]> (s, W1, B1){{extra_node}}
}}
"""


def big_net(weight_read_elsewhere: bool = False) -> onnx.ModelProto:
    """Channel ranges 0.02 .. 20 before a 64-channel depthwise conv; optionally its weight W1 also feeds a
    Mul by a graph input written to an output (a reader equalization does not rewire, which constant
    folding cannot remove)."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((BIG, 3, 1, 1)).astype(np.float32)
    w0 *= np.logspace(-3, 0, BIG, dtype=np.float32)[:, None, None, None] * 20
    extra = ("",) * 3
    if weight_read_elsewhere:
        extra = (", float[1] k", f", float[{BIG},1,3,3] w", "\n  w = Mul (W1, k)")
    text = BIG_NET
    for key, value in zip(("{extra_in}", "{extra_out}", "{extra_node}"), extra, strict=True):
        text = text.replace(key, value)
    return model_from_text(text, weights={"W0": w0, "B0": np.zeros(BIG, np.float32), "W1": (BIG, 1, 3, 3),
                                          "B1": (BIG,)})


def test_quantize_with_equalize_on_weights_over_a_kilobyte() -> None:
    model = big_net()
    assert numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W1")).nbytes > 1024
    calib, check = feeds(16), feeds(8, seed=2)
    eq = api.quantize(model, calib, QuantConfig(activations=MINMAX, equalize=True))  # raised UnsupportedModelError (exit 2)
    assert any("equalized" in note for note in eq.report.preprocess)
    assert unused_initializers(eq.model) == []
    plain = api.quantize(model, calib, QuantConfig(activations=MINMAX))
    assert _worst_channel_sqnr(model, eq.model, check) > _worst_channel_sqnr(model, plain.model, check) + 10


def test_equalize_removes_the_original_weight_unless_another_node_reads_it() -> None:
    for shared in (False, True):
        model = big_net(weight_read_elsewhere=shared)
        data = [{**f, **({"k": np.array([0.5], np.float32)} if shared else {})} for f in feeds(4)]
        pre, _ = api.prepare(model)
        eq = api.equalized(pre, QuantConfig(activations=MINMAX, equalize=True), from_iterable(data))
        assert unused_initializers(eq) == []
        assert ("W1" in {t.name for t in eq.graph.initializer}) is shared
        for want, got in zip(run(model, data[0]), run(eq, data[0]), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_equalize_gives_convs_sharing_a_weight_one_scaled_copy() -> None:
    text = f"""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,{C},8,8] y, float[N,{C},8,8] z) {{
  a = Conv (x, W0)
  s = Relu (a)
  y = Conv <group={C}, pads=[1,1,1,1]> (s, W1)
  z = Conv <group={C}, pads=[1,1,1,1], strides=[1,1]> (s, W1)
}}
"""
    model = model_from_text(text, weights={"W0": (C, 3, 1, 1), "W1": (C, 1, 3, 3)})
    eq = equalize(model, depthwise_inputs(model), {"s": np.arange(1.0, C + 1.0)})
    convs = [n for n in eq.graph.node if n.output[0] in ("y", "z")]
    assert convs[0].input[1] == convs[1].input[1] != "W1"
    assert [t.name for t in eq.graph.initializer].count(convs[0].input[1]) == 1
    assert unused_initializers(eq) == []


def test_cli_quantize_with_equalize_on_a_real_sized_depthwise_conv(tmp_path) -> None:
    from onnxq.cli import main

    path, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(big_net(), str(path))
    calib = save_arrays(tmp_path / "calib", [feed["x"][0] for feed in feeds(8)])
    assert main(["quantize", str(path), "-o", str(out), "--calib-data", str(calib), "--equalize"]) == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_shared_scale_loss_bits_by_hand() -> None:
    # channels at 1, 1/2, 1/4 of the largest lose 0, 1, 2 bits (median 1); an even tensor loses 0; a channel
    # never non-zero keeps its scale (channel_scales) and loses nothing
    assert shared_scale_loss_bits({"a": np.array([1.0, 0.5, 0.25]), "b": np.array([2.0, 2.0])}) == 0.5
    assert shared_scale_loss_bits({"c": np.array([4.0, 0.0, 1.0])}) == 0.0
    assert shared_scale_loss_bits({}) == 0.0


def test_auto_tries_the_equalized_variant_only_when_channels_are_uneven() -> None:
    uneven = api.quantize(net(), feeds(16))
    assert not any("equalization not tried" in n for n in uneven.report.preprocess)
    assert {s for s, _ in uneven.report.choice.scores} >= {"minmax + equalize", "minmax"}
    model = net()  # the same network with even channel ranges (one scale costs < 1 bit)
    w0 = next(t for t in model.graph.initializer if t.name == "W0")
    base = np.array([1.0, -0.5, 0.25], np.float32)  # every channel the same mix of iid inputs: same range
    w0.CopyFrom(numpy_helper.from_array(np.stack([np.roll(base, c) for c in range(C)])[:, :, None, None], "W0"))
    even = api.quantize(model, feeds(16))
    note = next(n for n in even.report.preprocess if "equalization not tried" in n)
    assert "bits per channel" in note and not any("equalize" in s for s, _ in even.report.choice.scores)
