"""What the tests share, defined once: repository paths, tiny models, onnxruntime runs, feeds and data
folders, numpy references. Fixtures live in the conftest.py files (tests/conftest.py for the suite).

Import it as ``helpers`` (``from helpers import ort_run``): pytest's default import mode puts tests/ on
``sys.path`` when it loads tests/conftest.py. Every reference here is independent of the code it checks:
runs go through onnxruntime itself (not onnxq.runtime), arithmetic is plain numpy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxq.config import ActivationSpec
from onnxq.testing import model_from_text

# The tests of one method's arithmetic pin it: the default, auto, chooses among methods by score.
MINMAX = ActivationSpec(method="minmax")

# ------------------------------------------------------------------------------------------------ paths
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ONNXQ_DATA", REPO.parent / "shared" / "data"))  # real data sets
MODELS = Path(os.environ.get("ONNXQ_MODELS", REPO / "models" / ".cache"))  # models built by models/*.py

# ----------------------------------------------------------------------------------------- tiny models
# Texts for onnxq.testing.model_from_text; the batch dimension is N, ``with_batch`` fixes it.

# Conv (3 -> 4 channels, 3x3, padded) and Relu on 8x8: the smallest model with something to quantize.
CONV_RELU = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
  c = Conv <pads=[1,1,1,1]> (x, W, B)
  y = Relu (c)
}
"""
CONV_RELU_WEIGHTS = {"W": (4, 3, 3, 3), "B": (4,)}

# A classifier head: Conv, Relu, GlobalAveragePool, Flatten, Gemm to 10 scores.
POOLED_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,10] y) {
  c = Conv <pads=[1,1,1,1]> (x, W, B)
  r = Relu (c)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  y = Gemm <transB=1> (f, G, C)
}
"""
POOLED_NET_WEIGHTS = {"W": (8, 3, 3, 3), "B": (8,), "G": (10, 8), "C": (10,)}

# The classifier with a second conv and a residual Add: four quantized layers to rank.
RESIDUAL_NET = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,8,8] x) => (float[N,10] y) {
  c = Conv <pads=[1,1,1,1]> (x, W, B)
  r = Relu (c)
  c2 = Conv <pads=[1,1,1,1]> (r, W2, B2)
  a = Add (c2, r)
  p = GlobalAveragePool (a)
  f = Flatten (p)
  y = Gemm <transB=1> (f, G, C)
}
"""
RESIDUAL_NET_WEIGHTS = {"W": (8, 3, 3, 3), "B": (8,), "W2": (8, 8, 3, 3), "B2": (8,), "G": (10, 8), "C": (10,)}

# Two MatMuls with a Relu between: small enough for a numpy forward pass (weights W1 (4, 5), W2 (5, 3)).
SMALL_MLP = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,3] y) {
  h = MatMul (x, W1)
  r = Relu (h)
  y = MatMul (r, W2)
}
"""
SMALL_MLP_WEIGHTS = {"W1": (4, 5), "W2": (5, 3)}

# Residual Add, an activation shared by two convs, Concat (shared scales), int32 biases on ort-cpu.
SMALL_CNN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,6,8,8] y) {
  c = Conv <pads=[1,1,1,1]> (x, W, B)
  r = Relu (c)
  d = Conv <pads=[1,1,1,1]> (r, W2, B2)
  e = Conv <pads=[1,1,1,1]> (r, W3, B3)
  a = Add (d, r)
  y0 = Concat <axis=1> (a, e)
  y = Conv (y0, W4, B4)
}
"""
SMALL_CNN_WEIGHTS = {"W": (4, 3, 3, 3), "B": (4,), "W2": (4, 4, 3, 3), "B2": (4,), "W3": (4, 4, 3, 3),
                     "B3": (4,), "W4": (6, 8, 1, 1), "B4": (6,)}


def with_batch(text: str, batch: int | str) -> str:
    """``text`` with its batch dimension N replaced (a number fixes it, a name renames it)."""
    return text.replace("float[N,", f"float[{batch},")


def tiny_model(text: str, weights: dict, batch: int | str = "N", **kwargs) -> onnx.ModelProto:
    return model_from_text(with_batch(text, batch), weights=weights, **kwargs)


def conv_relu(batch: int | str = "N") -> onnx.ModelProto:
    return tiny_model(CONV_RELU, CONV_RELU_WEIGHTS, batch)


def pooled_net(batch: int | str = "N") -> onnx.ModelProto:
    return tiny_model(POOLED_NET, POOLED_NET_WEIGHTS, batch)


def residual_net(batch: int | str = "N") -> onnx.ModelProto:
    return tiny_model(RESIDUAL_NET, RESIDUAL_NET_WEIGHTS, batch)


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------ onnxruntime
def ort_session(model: onnx.ModelProto | Path | str, *, optimize: bool = False,
                prepack: bool = True) -> ort.InferenceSession:
    """onnxruntime's CPU session on ``model`` (a ModelProto or a path). Graph optimizations are off unless
    ``optimize``: Q/DQ pairs then compute exact fake quantization. ``prepack=False`` stops onnxruntime
    pre-packing constant weights (a dequantized weight is not pre-packed: sums differ in the last bit)."""
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(payload, opts, providers=["CPUExecutionProvider"])


def ort_run(model: onnx.ModelProto | Path | str, feed: dict[str, np.ndarray], outputs: list[str] | None = None,
            **options) -> list[np.ndarray]:
    """``outputs`` (all by default) of ``model`` on ``feed``, from ``ort_session(model, **options)``."""
    return ort_session(model, **options).run(outputs, feed)


# ------------------------------------------------------------------------------------------ feeds, data
def random_feeds(shape: Sequence[int], n: int, seed: int | np.random.Generator = 0,
                 name: str = "x") -> list[dict[str, np.ndarray]]:
    """``n`` feeds of standard normal float32 ``shape`` for the input ``name``."""
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def save_arrays(folder: Path, arrays: Iterable[np.ndarray]) -> Path:
    """``arrays`` as 000.npy, 001.npy, ... in ``folder`` (made if missing): a ``--calib-data`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, a in enumerate(arrays):
        np.save(folder / f"{k:03d}.npy", a)
    return folder


def save_random_arrays(folder: Path, n: int, shape: Sequence[int], seed: int | np.random.Generator = 0,
                       dtype: type = np.float32) -> Path:
    """``n`` standard normal samples of ``shape`` saved by ``save_arrays``; ``seed`` may be a Generator to
    continue (two folders from one stream)."""
    rng = np.random.default_rng(seed)
    return save_arrays(folder, [rng.standard_normal(shape).astype(dtype) for _ in range(n)])


# ------------------------------------------------------------------------------------ numpy references
def fake_quant(x: np.ndarray, scale, axis: int | None = None, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear as ONNX defines them (float32 division, half to even)."""
    s = np.asarray(scale, np.float32)
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return (np.clip(np.rint(x.astype(np.float32) / s), qmin, qmax) * s).astype(np.float32)


def ref_sqnr_db(refs: Iterable[np.ndarray], outs: Iterable[np.ndarray]) -> float:
    """Output SQNR in dB pooled over all samples, in float64."""
    a = np.concatenate([np.ravel(r) for r in refs]).astype(np.float64)
    b = np.concatenate([np.ravel(o) for o in outs]).astype(np.float64)
    return 10 * np.log10(np.sum(a * a) / np.sum((a - b) ** 2))


# ------------------------------------------------------------------------------------------- pipeline
def quantized_parts(text: str, weights: dict, shape: Sequence[int], config=None, n: int = 6):
    """(preprocessed model, plan, params, feeds) of a tiny model calibrated on ``n`` random feeds."""
    import onnxq
    from onnxq import api
    from onnxq.collect.python_sources import from_iterable
    from onnxq.config import QuantConfig

    pre, _ = api.prepare(model_from_text(text, weights=weights))
    config = config or QuantConfig(activations=MINMAX)
    qplan = onnxq.plan(pre, config)
    feeds = random_feeds(shape, n)
    stats, _ = onnxq.collect(pre, qplan, from_iterable(feeds), config)
    return pre, qplan, onnxq.solve(stats, qplan, config), feeds


def restrict_plan(plan, units):
    """The plan with only the edges that feed ``units`` (an independent way to quantize a subset)."""
    from onnxq.records import QuantPlan

    specs = []
    for s in plan.specs:
        consumers = tuple(c for c in s.consumers if c[0] in units)
        if consumers:
            specs.append(dataclasses.replace(s, consumers=consumers))
    return QuantPlan(plan.target, tuple(specs), plan.skips, tuple(u for u in plan.quantized_nodes if u in units))


# ---------------------------------------------------------------------------------------------- the CLI
def error_line(capsys) -> str:
    """The one line an onnxq error leaves on stderr (read from ``capsys``), checked to be no traceback."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in err
    return lines[-1]
