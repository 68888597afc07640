"""Every flag of every subcommand does what its help says: one case per (subcommand, flag).

The cases are checked against the argparse definitions themselves (:func:`test_every_flag_has_a_case`),
so a new flag without a case fails the suite. Each case runs the subcommand in-process twice on tiny
models, without and with the flag, and asserts the specific change its help promises (a field of the
JSON report, a value in the written model, an exit code), not merely "something changed".
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import save_arrays
from PIL import Image

from onnxq.cli import build_parser, main
from onnxq.testing import model_from_text

# A conv net with every op a flag can address: a depthwise conv (--equalize), a residual Add, a
# ConvTranspose (--convtranspose-per-tensor), a Gemm (--exclude-op Gemm); dynamic batch and spatial dims
# (--dim, --image-size).
MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,3,H,W] x) => (float[N,5] y) {
  a = Conv <pads=[3,3,3,3]> (x, W1, B1)
  r = Relu (a)
  d = Conv <pads=[1,1,1,1], group=8> (r, W2, B2)
  s = Add (d, r)
  t = ConvTranspose (s, W4, B4)
  p = GlobalAveragePool (t)
  f = Flatten (p)
  y = Gemm <transB=1> (f, W3, B3)
}
"""

NHWC_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,H,W,3] x) => (float[N,4,H,W] y) {
  t = Transpose <perm=[0,3,1,2]> (x)
  y = Conv <pads=[1,1,1,1]> (t, W1, B1)
}
"""

METRIC = """
import numpy as np

def score(outputs):
    return 10.0 + float(np.mean([o[0][0, 0] for o in outputs]))  # higher is better


def metric(outputs_float, outputs_quant=None):
    # one model's outputs (quantize, sensitivity) or the float and quantized model's (compare)
    if outputs_quant is None:
        return score(outputs_float)
    return score(outputs_float), score(outputs_quant)
"""

SCRIPT = """
import numpy as np

def load_data():
    rng = np.random.default_rng(7)
    for _ in range(4):
        yield {"x": (3.0 * rng.standard_normal((1, 3, 16, 16))).astype(np.float32)}
"""


@dataclass
class Workspace:
    root: Path
    model: Path
    nhwc_model: Path
    quant: Path  # onnxq's quantized MODEL (for compare)
    other: Path  # MODEL with other Gemm weights: a "quantized" model that disagrees on top-1
    calib: Path  # .npy samples, 16x16
    calib3: Path  # the same samples times 3
    images: Path
    nhwc_images: Path
    script: Path
    metric: Path
    config: Path
    stats: Path
    nobc: Path  # a config without bias correction
    bases: dict[tuple[str, ...], Run] = field(default_factory=dict)  # base runs, shared by the cases

    def fmt(self, args: list[str], out: Path) -> list[str]:
        values = {k: str(v) for k, v in vars(self).items()} | {"out": str(out)}
        return [a.format(**values) for a in args]


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w2 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    return {
        # heavy-tailed and 147 taps per channel: range-clipping weight methods (mse, percentile) have
        # something to clip
        "W1": rng.laplace(size=(8, 3, 7, 7)).astype(np.float32), "B1": rng.standard_normal(8).astype(np.float32),
        "W2": w2, "B2": rng.standard_normal(8).astype(np.float32),
        "W4": (rng.standard_normal((8, 6, 1, 1)) * np.arange(1, 7)[None, :, None, None]).astype(np.float32),
        "B4": rng.standard_normal(6).astype(np.float32),
        "W3": rng.standard_normal((5, 6)).astype(np.float32), "B3": rng.standard_normal(5).astype(np.float32),
    }


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("flags")
    model = root / "m.onnx"
    onnx.save(model_from_text(MODEL, weights=_weights(0)), str(model))
    other = root / "other.onnx"
    weights = _weights(0)
    weights["W3"] = weights["W3"][::-1].copy()
    onnx.save(model_from_text(MODEL, weights=weights), str(other))
    nhwc_model = root / "nhwc.onnx"
    onnx.save(model_from_text(NHWC_MODEL, weights={"W1": (4, 3, 3, 3), "B1": (4,)}), str(nhwc_model))
    rng = np.random.default_rng(0)
    xs = []
    for i in range(8):  # channel ranges differ (equalize has something to even out)
        x = (rng.standard_normal((3, 16, 16)) * np.array([1.0, 4.0, 0.2])[:, None, None]).astype(np.float32)
        x[0, 0, i] += 6.0 * (i % 3)  # batches differ in range (--batch-statistic)
        xs.append(x)
    calib, calib3 = save_arrays(root / "calib", xs), save_arrays(root / "calib3", [3 * x for x in xs])
    images, nhwc_images = root / "img", root / "img_nhwc"
    images.mkdir()
    nhwc_images.mkdir()
    for i in range(6):
        pixels = rng.integers(0, 255, (20 + 2 * i, 26, 3), dtype=np.uint8)
        pixels[..., 0] //= 4  # channels differ (--bgr)
        Image.fromarray(pixels).save(images / f"{i}.png")
        Image.fromarray(pixels).save(nhwc_images / f"{i}.png")
    script = root / "load_data.py"
    script.write_text(SCRIPT)
    metric = root / "metric.py"
    metric.write_text(METRIC)
    config = root / "q.toml"
    config.write_text('exclude_ops = ["Gemm"]\n')
    nobc = root / "nobc.toml"
    nobc.write_text("[weights]\nbias_correction = false\n")
    quant = root / "q.onnx"
    stats = root / "s.npz"
    assert main(["-q", "quantize", str(model), "-o", str(quant), "--calib-data", str(calib)]) == 0
    assert main(["-q", "calibrate", str(model), "--calib-data", str(calib), "-o", str(stats)]) == 0
    return Workspace(root, model, nhwc_model, quant, other, calib, calib3, images, nhwc_images, script, metric,
                     config, stats, nobc)


@dataclass
class Run:
    code: int
    out: str
    err: str
    dir: Path

    def json(self) -> dict:
        return json.loads(self.out)

    def model(self, name: str = "out.onnx") -> onnx.ModelProto:
        return onnx.load(str(self.dir / name))

    def file(self, name: str) -> Path:
        return self.dir / name

    def inits(self, name: str = "out.onnx") -> dict[str, np.ndarray]:
        return {t.name: onnx.numpy_helper.to_array(t) for t in self.model(name).graph.initializer}

    def tensor(self, name: str) -> dict:
        """The report record of tensor ``name`` (quantize --format json)."""
        return next(t for t in self.json()["tensors"] if t["tensor"] == name)

    def skipped(self) -> dict[str, str]:
        return {s["node"]: s["rule"] for s in self.json()["skipped"]}

    def stats(self, name: str = "out.npz") -> dict[str, np.ndarray]:
        with np.load(self.dir / name) as data:
            return {k: data[k] for k in data.files}


def _run(ws: Workspace, folder: Path, capsys, command: str, args: list[str]) -> Run:
    folder.mkdir()
    capsys.readouterr()
    code = main([command, *ws.fmt(args, folder / "out")])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err, folder)


def _base_run(ws: Workspace, capsys, command: str, args: list[str]) -> Run:
    """The run without the flag: the same for every case with the same arguments, so run once (in its own
    folder of the module's workspace, which no check writes to)."""
    key = (command, *args)
    if key not in ws.bases:
        ws.bases[key] = _run(ws, ws.root / f"base{len(ws.bases)}", capsys, command, args)
    return ws.bases[key]


# Base arguments per subcommand; {out} is a path in the run's own folder ("out.onnx", "out.npz", ...).
QUANTIZE = ["{model}", "-o", "{out}.onnx", "--calib-data", "{calib}", "--format", "json"]
QUANTIZE_IMG = ["{model}", "-o", "{out}.onnx", "--calib-data", "{images}", "--image-size", "16", "16",
                "--format", "json"]
INSPECT = ["{model}", "--format", "json"]
CALIBRATE = ["{model}", "--calib-data", "{calib}", "-o", "{out}.npz"]
COMPARE = ["{model}", "{quant}", "--data", "{calib}", "--format", "json"]
SENSITIVITY = ["{model}", "--calib-data", "{calib}", "--format", "json"]
FALLBACK = QUANTIZE + ["--auto-fallback", "--max-float-layers", "1"]
BASES = {"quantize": QUANTIZE, "inspect": INSPECT, "calibrate": CALIBRATE, "compare": COMPARE,
         "sensitivity": SENSITIVITY, "demo": ["-o", "{out}.onnx", "--calib-size", "8", "--eval-size", "16"]}


@dataclass
class Case:
    """``flag`` of ``command``: run ``base`` and ``base + args`` (``with_args``) and ``check(base, flagged)``."""

    command: str
    flag: str
    args: list[str]
    check: Callable[[Run, Run], None]
    base: list[str] | None = None
    replace: bool = False  # ``args`` replace the base arguments instead of extending them
    slow: bool = False
    id: str = field(default="")

    def __post_init__(self) -> None:
        self.id = self.id or f"{self.command} {self.flag}"


def ok(run: Run) -> Run:
    assert run.code == 0, run.err
    return run


def _x_range(run: Run) -> float:
    return ok(run).tensor("x")["hi"]


def _ranges(run: Run) -> tuple[float, ...]:
    """The calibrated range of every activation (quantize --format json)."""
    return tuple(t["hi"] for t in ok(run).json()["tensors"] if t["role"] == "activation")


def _weight_ints(run: Run, weight: str) -> np.ndarray:
    """The int8 values a weight is written with (dq-only initializer, or Q applied to the float weight)."""
    model = ok(run).model()
    inits = run.inits()
    consumers = {i: n for n in model.graph.node for i in n.input}
    if weight in consumers and consumers[weight].op_type == "QuantizeLinear":
        q = consumers[weight]
        scale = inits[q.input[1]]
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * inits[weight].ndim
        if scale.ndim:
            shape[axis] = -1
        return np.clip(np.rint(inits[weight] / scale.reshape(shape)), -128, 127).astype(np.int8)
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear"
              and n.input[0] in inits and inits[n.input[0]].dtype == np.int8 and weight in n.output[0])
    return inits[dq.input[0]]


def changed(key: Callable[[Run], object]) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        a, b = key(ok(base)), key(ok(new))
        assert a != b, f"flag changed nothing: {a!r}"
    return check


def _plan_dtypes(run: Run) -> set[str]:
    data = ok(run).json()
    return {t["dtype"] for t in data.get("tensors", data.get("specs", []))}


def _plan_quantized(run: Run) -> set[str]:
    return set(ok(run).json()["quantized_nodes"])


def _plan_skips(run: Run) -> dict[str, str]:
    data = ok(run).json()
    return {s["node"]: s["rule"] for s in data.get("skipped", data.get("skips", []))}


def _weight_axis(run: Run, weight: str) -> object:
    """Channels of a weight's scale (quantize) or its per-channel axis (inspect, None = per tensor)."""
    data = ok(run).json()
    if "tensors" in data:
        return run.tensor(weight)["channels"] > 1
    return next(s for s in data["specs"] if s["tensor"] == weight)["axis"] is not None


def _data_line(run: Run) -> str:
    return ok(run).json()["data"]


def _stats_keys(run: Run) -> set[str]:
    return set(ok(run).stats())


def _stats_equal(a: Run, b: Run) -> bool:
    sa, sb = ok(a).stats(), ok(b).stats()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def _stats_differ(base: Run, new: Run) -> None:
    assert not _stats_equal(base, new), "statistics unchanged"


def _layers(run: Run) -> list[str]:
    return [layer["node"] for layer in ok(run).json()["layers"]]


def _error_names(flag: str) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        ok(base)
        assert new.code == 2 and flag in new.err and "Traceback" not in new.err, (new.code, new.err)
    return check


def _scaled(factor: float) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert _x_range(new) == pytest.approx(factor * _x_range(base), rel=0.02)
    return check


# ---------------------------------------------------------------------------------------------------
# data options (quantize, calibrate, sensitivity, compare share them)

def data_cases(command: str) -> list[Case]:
    prefix = "--data" if command == "compare" else "--calib-data"
    script = "--data-script" if command == "compare" else "--calib-script"
    base = BASES[command]
    observe: Callable[[Run], object]
    if command == "quantize":
        observe = _ranges
    elif command == "calibrate":
        observe = lambda r: {k: v.tobytes() for k, v in ok(r).stats().items()}  # noqa: E731
    elif command == "compare":
        observe = lambda r: ok(r).json()["outputs"][0]["sqnr_db"]  # noqa: E731
    else:
        observe = lambda r: ok(r).json()["all_quantized"]["sqnr_db"]  # noqa: E731

    def sub(args: list[str], old: str, new: list[str]) -> list[str]:
        k = args.index(old)
        return args[:k] + new + args[k + 2:]

    img_base = sub(base, prefix, [prefix, "{images}", "--image-size", "16", "16"])

    def img(flag: str, *extra: str, base_extra: tuple[str, ...] = ()) -> Case:
        return Case(command, flag, [flag, *extra], changed(observe), base=img_base + list(base_extra))

    def samples(run: Run) -> object:
        if command == "quantize":
            return ok(run).json()["samples"]
        if command == "calibrate":
            return ok(run).out
        return ok(run).json()["samples"]

    cases = [
        Case(command, prefix, sub(base, prefix, [prefix, "{calib3}"]), changed(observe), replace=True),
        Case(command, script, sub(base, prefix, [script, "{script}"]), changed(observe), replace=True),
        Case(command, "--random", sub(base, prefix, ["--random", "3", "--dim", "H=16", "--dim", "W=16"]),
             changed(observe), replace=True),
        Case(command, "--dim", ["--dim", "H=8"], changed(observe),
             base=sub(base, prefix, ["--random", "3", "--dim", "H=16", "--dim", "W=16"])),
        Case(command, "--max-samples", ["--max-samples", "2"], changed(samples)),
        Case(command, "--image-size", ["--image-size", "12", "20"], changed(observe),
             base=sub(base, prefix, [prefix, "{images}", "--image-size", "16", "16"])),
        img("--resize", "stretch"),
        img("--short-side", "24"),
        img("--pad-value", "0", base_extra=("--resize", "letterbox")),
        img("--pad-position", "top-left", base_extra=("--resize", "letterbox", "--pad-value", "255")),
        img("--interpolation", "nearest"),
        img("--pixel-scale", "1"),
        img("--mean", "0.5"),
        img("--std", "0.25"),
        img("--bgr"),
        Case(command, "--nhwc", ["--nhwc"], _nhwc,
             base=[a.replace("{model}", "{nhwc_model}").replace("{quant}", "{nhwc_model}") for a in img_base]),
    ]
    if command == "quantize":  # the precise effects, once (minmax: a range scales with the data exactly)
        by_flag = {c.flag: c for c in cases}
        for flag, factor in ((prefix, 3.0), ("--pixel-scale", 255.0)):  # pixel scale 1 instead of 1/255
            case = by_flag[flag]
            case.check = _scaled(factor)
            case.base = (case.base or list(base)) + ["--method", "minmax"]
    return cases


def _nhwc(base: Run, new: Run) -> None:
    # an NHWC model: without the flag the images do not fit and the error names the flag; with it they do
    assert base.code == 2 and "--nhwc" in base.err, base.err
    ok(new)


# ---------------------------------------------------------------------------------------------------
# quantization options (quantize, inspect, calibrate, sensitivity)

def _ort_cpu_dtypes(base: Run, new: Run) -> None:
    assert _plan_dtypes(base) == {"int8"}
    assert "uint8" in _plan_dtypes(new)


def _excluded(node: str, rule_part: str = "exclude") -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert node in _plan_quantized(base) and node not in _plan_quantized(new)
        assert rule_part in _plan_skips(new)[node]
    return check


def _per_tensor(weights: tuple[str, ...], kept: tuple[str, ...] = ()) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert all(_weight_axis(base, w) for w in weights + kept)
        assert not any(_weight_axis(new, w) for w in weights) and all(_weight_axis(new, w) for w in kept)
    return check


def _reduce_range(base: Run, new: Run) -> None:
    assert np.abs(_weight_ints(base, "W1")).max() == 127
    assert np.abs(_weight_ints(new, "W1")).max() == 63


def _dq_only(base: Run, new: Run) -> None:
    ops = lambda r: [n.op_type for n in ok(r).model().graph.node]  # noqa: E731
    int8 = lambda r: [k for k, v in r.inits().items() if v.dtype == np.int8 and v.ndim == 4]  # noqa: E731
    assert not int8(base) and ops(base).count("QuantizeLinear") > ops(new).count("QuantizeLinear")
    assert len(int8(new)) == 3  # W1, W2, W4


def _equalized(base: Run, new: Run) -> None:
    assert "Mul" not in [n.op_type for n in ok(base).model().graph.node]
    assert "Mul" in [n.op_type for n in ok(new).model().graph.node]
    assert any("equaliz" in note for note in new.json()["preprocess"])


def _weight_scale(weight: str) -> Callable[[Run], object]:
    return lambda r: ok(r).tensor(weight)["scale"]


def _weight_scales(run: Run) -> dict[str, np.ndarray]:
    """Per weight (float initializer -> QuantizeLinear), its scales in the written model."""
    inits = ok(run).inits()
    return {n.input[0]: inits[n.input[1]] for n in run.model().graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] in inits}


def _clipped_weights(base: Run, new: Run) -> None:
    """Every channel's scale at most max|w|'s, and some below it: the method clips outliers."""
    a, b = _weight_scales(base), _weight_scales(new)
    assert a.keys() == b.keys() and a
    assert all(np.all(b[k] <= a[k] * (1 + 1e-6)) for k in a)
    assert any(np.any(b[k] < a[k]) for k in a)


def _config_method(name: str) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert ok(new).json()["config"]["activations"]["method"] == name
        assert _ranges(new) != _ranges(base)
    return check


def _gemm_excluded_inspect(base: Run, new: Run) -> None:
    assert "Gemm_0" in _plan_quantized(base) and "Gemm_0" not in _plan_quantized(new)


def quant_cases(command: str) -> list[Case]:
    """Placement flags act on every subcommand that plans; calibration flags where statistics are made."""
    if command == "quantize":
        excl = _excluded
        gemm = _excluded("Gemm_0")
        target: Callable[[Run, Run], None] = _ort_cpu_dtypes
    elif command == "inspect":
        def excl(node: str, rule_part: str = "exclude") -> Callable[[Run, Run], None]:
            return _excluded(node, rule_part)
        gemm = _gemm_excluded_inspect
        target = _ort_cpu_dtypes
    elif command == "calibrate":
        def excl(node: str, rule_part: str = "exclude") -> Callable[[Run, Run], None]:
            return lambda a, b: None if _stats_keys(a) != _stats_keys(b) else pytest.fail("same tensors")
        gemm = excl("Gemm_0")
        target = _stats_differ
    else:  # sensitivity ranks the quantized layers
        def excl(node: str, rule_part: str = "exclude") -> Callable[[Run, Run], None]:
            def check(a: Run, b: Run) -> None:
                assert node in _layers(a) and node not in _layers(b)
            return check
        gemm = excl("Gemm_0")
        target = changed(lambda r: ok(r).json()["all_quantized"]["sqnr_db"])
    cases = [
        Case(command, "--config", ["--config", "{config}"], gemm),
        Case(command, "--target", ["--target", "ort-cpu"], target),
        Case(command, "--exclude-node", ["--exclude-node", "^Conv_1$"], excl("Conv_1")),
        Case(command, "--exclude-op", ["--exclude-op", "Gemm"], excl("Gemm_0")),
    ]
    if command != "inspect":  # inspect runs no data: it does not take these (test_inspect_refuses_data_flags)
        cases += [
            Case(command, "--batch-size", ["--batch-size", "8"], _batch_size),
            Case(command, "--memory-mb", ["--memory-mb", "0.01"], _memory),
        ]
    if command in ("quantize", "inspect"):
        cases += [
            Case(command, "--per-tensor-weights", ["--per-tensor-weights"], _per_tensor(("W1", "W2", "W3", "W4"))),
            Case(command, "--convtranspose-per-tensor", ["--convtranspose-per-tensor"],
                 _per_tensor(("W4",), kept=("W1", "W2", "W3"))),
        ]
    if command == "quantize":
        cases += [
            Case(command, "--method", ["--method", "percentile"], _config_method("percentile")),
            Case(command, "--percentile", ["--percentile", "99"], _smaller(lambda r: _ranges(r)[0]),
                 base=QUANTIZE + ["--method", "percentile"]),
            Case(command, "--num-bins", ["--num-bins", "256"], changed(_ranges),
                 base=QUANTIZE + ["--method", "entropy"]),
            Case(command, "--batch-statistic", ["--batch-statistic", "mean"], _smaller_range,
                 base=QUANTIZE + ["--batch-size", "1", "--method", "minmax"]),
            Case(command, "--weight-method", ["--weight-method", "mse"], _clipped_weights),
            Case(command, "--weight-method", ["--weight-method", "percentile"], _clipped_weights,
                 id="quantize --weight-method percentile"),
            Case(command, "--weight-percentile", ["--weight-method", "percentile", "--weight-percentile", "90"],
                 _clipped_weights, base=QUANTIZE + ["--weight-method", "percentile"]),
            Case(command, "--reduce-range", ["--reduce-range", "on"], _reduce_range),
            Case(command, "--weight-format", ["--weight-format", "dq-only"], _dq_only),
            Case(command, "--equalize", ["--equalize"], _equalized),
        ]
    elif command == "sensitivity":
        sqnr = changed(lambda r: ok(r).json()["all_quantized"]["sqnr_db"])
        cases += [
            Case(command, "--method", ["--method", "percentile", "--percentile", "90"], sqnr),
            Case(command, "--percentile", ["--percentile", "90"], sqnr, base=SENSITIVITY + ["--method", "percentile"]),
            Case(command, "--num-bins", ["--num-bins", "256"], sqnr, base=SENSITIVITY + ["--method", "entropy"]),
            Case(command, "--batch-statistic", ["--batch-statistic", "mean"], sqnr,
                 base=SENSITIVITY + ["--batch-size", "1", "--method", "minmax"]),
            Case(command, "--weight-method", ["--weight-method", "percentile", "--weight-percentile", "60"], sqnr),
            Case(command, "--weight-percentile", ["--weight-percentile", "60"], sqnr,
                 base=SENSITIVITY + ["--weight-method", "percentile"]),
            Case(command, "--per-tensor-weights", ["--per-tensor-weights"], sqnr),
            Case(command, "--convtranspose-per-tensor", ["--convtranspose-per-tensor"], sqnr),
            Case(command, "--reduce-range", ["--reduce-range", "on"], sqnr),
            Case(command, "--weight-format", ["--weight-format", "dq-only"], _same_sqnr),
            Case(command, "--equalize", ["--equalize"], sqnr),
        ]
    elif command == "calibrate":
        cases += [
            Case(command, "--num-bins", ["--num-bins", "256"], _stats_differ),
            Case(command, "--batch-statistic", ["--batch-statistic", "mean"], _stats_differ),
            Case(command, "--equalize", ["--equalize"], _stats_differ),
        ]
    return cases


def _smaller(key: Callable[[Run], float]) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert key(new) < key(base)
    return check


def _smaller_range(base: Run, new: Run) -> None:
    assert _x_range(new) < _x_range(base)


def _same_sqnr(base: Run, new: Run) -> None:
    # int8 initializers -> DQ compute what float -> Q -> DQ computes: the analysis must not change
    assert ok(new).json()["all_quantized"]["sqnr_db"] == pytest.approx(ok(base).json()["all_quantized"]["sqnr_db"],
                                                                        abs=0.01)


def _batch_size(base: Run, new: Run) -> None:
    # statistics do not depend on the batching (checked elsewhere); how the data ran is reported
    assert "batches of 8 feeds" in ok(new).out + new.err and "batches of" not in ok(base).out + base.err


def _memory(base: Run, new: Run) -> None:
    text = ok(new).out + new.err
    assert "passes over the data" in text and "passes" not in ok(base).out + base.err


@pytest.mark.parametrize("command,scope", [("inspect", "plan"), ("calibrate", "collect")])
def test_subcommands_refuse_flags_they_cannot_act_on(command, scope, ws, capsys):
    """inspect reads no data and solves nothing; calibrate solves nothing: such flags are refused by name."""
    refused = {"plan": ["--method", "entropy", "--batch-size", "2", "--memory-mb", "8", "--equalize", "--num-bins",
                        "256", "--weight-method", "mse", "--reduce-range", "on", "--weight-format", "dq-only"],
               "collect": ["--method", "entropy", "--percentile", "99", "--weight-method", "mse",
                           "--per-tensor-weights", "--reduce-range", "on", "--weight-format", "dq-only"]}[scope]
    base = [str(ws.model)] + ([] if command == "inspect" else ["--calib-data", str(ws.calib), "-o", "x.npz"])
    k = 0
    while k < len(refused):
        flag = [refused[k]] + ([refused[k + 1]] if k + 1 < len(refused) and not refused[k + 1].startswith("--")
                               else [])
        k += len(flag)
        assert main([command, *base, *flag]) == 2
        err = capsys.readouterr().err
        assert f"onnxq {command} does not take {flag[0]}" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------
# per-subcommand options

def _wrote(name: str) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        ok(new)
        assert new.file(name).exists() and not base.file(name).exists()
    return check


def _report_json(base: Run, new: Run) -> None:
    ok(new)
    written = json.loads(new.file("out.json").read_text())
    assert written["quantized_nodes"] == new.json()["quantized_nodes"] and not base.file("out.json").exists()


def _text_vs_json(base: Run, new: Run) -> None:
    ok(base)
    ok(new)
    with pytest.raises(json.JSONDecodeError):
        json.loads(base.out)
    assert isinstance(json.loads(new.out), dict)


def _load_stats(base: Run, new: Run) -> None:
    assert _x_range(new) == pytest.approx(_x_range(base)) and "statistics" in new.json()["data"]


def _fallback_rule(key: str, value: object) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert ok(new).json()["fallback"]["rule"][key] == value != ok(base).json()["fallback"]["rule"][key]
    return check


def quantize_cases() -> list[Case]:
    q = "quantize"
    return [
        Case(q, "model", ["{other}", "-o", "{out}.onnx", "--calib-data", "{calib}", "--format", "json"],
             changed(lambda r: _weight_scales(r)["W3"].tolist()), replace=True),
        Case(q, "--output", ["{model}", "-o", "{out}.int8.onnx", "--calib-data", "{calib}", "--format", "json"],
             _wrote("out.int8.onnx"),
             base=["{model}", "-o", "{out}.onnx", "--calib-data", "{calib}", "--format", "json"], replace=True),
        Case(q, "--save-stats", ["--save-stats", "{out}.npz"], _wrote("out.npz")),
        Case(q, "--load-stats", ["{model}", "-o", "{out}.onnx", "--load-stats", "{stats}", "--format", "json"],
             _load_stats, replace=True),
        Case(q, "--report-json", ["--report-json", "{out}.json"], _report_json),
        Case(q, "--format", ["{model}", "-o", "{out}.onnx", "--calib-data", "{calib}", "--format", "json"],
             _text_vs_json, base=["{model}", "-o", "{out}.onnx", "--calib-data", "{calib}"], replace=True),
        Case(q, "--auto-fallback", ["--auto-fallback", "--max-float-layers", "1"],
             lambda a, b: _assert_floats(b, 1) if "fallback" not in ok(a).json() else pytest.fail("fallback")),
        Case(q, "--max-float-layers", ["--max-float-layers", "2"], lambda a, b: _assert_floats(b, 2),
             base=QUANTIZE + ["--auto-fallback"]),
        Case(q, "--min-sqnr", ["--min-sqnr", "99"], _fallback_until_cap, base=QUANTIZE + ["--auto-fallback"]),
        Case(q, "--eval-data", ["--eval-data", "{calib3}"], _fallback_eval("calib3"), base=FALLBACK),
        Case(q, "--eval-script", ["--eval-script", "{script}"], _fallback_eval("load_data.py"), base=FALLBACK),
        Case(q, "--eval-samples", ["--eval-samples", "3"], _fallback_samples(3), base=FALLBACK),
        Case(q, "--metric-script", ["--metric-script", "{metric}"], _fallback_metric, base=FALLBACK),
        Case(q, "--max-metric-drop", ["--max-metric-drop", "0"], _fallback_rule("max_metric_drop", 0),
             base=QUANTIZE + ["--auto-fallback", "--metric-script", "{metric}", "--max-float-layers", "1"]),
        Case(q, "--fallback-select", ["--fallback-select", "sqnr"], _fallback_rule("select", "sqnr"), base=FALLBACK),
        Case(q, "--report", ["--report", "{out}.html"], _html_report),
        Case(q, "--mode", ["{model}", "-o", "{out}.onnx", "--mode", "dynamic", "--format", "json"], _dynamic_mode,
             replace=True),
    ]


def _dynamic_mode(base: Run, new: Run) -> None:
    # no calibration data given; the Gemm runs as onnxruntime's DynamicQuantizeMatMul, the convs stay float
    assert ok(new).json()["config"]["mode"] == "dynamic" != ok(base).json()["config"]["mode"]
    ops = [n.op_type for n in new.model().graph.node]
    assert "DynamicQuantizeMatMul" in ops and "QuantizeLinear" not in ops
    assert {s["rule"] for s in new.json()["skipped"] if s["op_type"] == "Conv"} == {"dynamic-conv"}


def _assert_floats(run: Run, n: int) -> None:
    fallback = ok(run).json()["fallback"]
    assert len(fallback["float_nodes"]) == n
    assert all(_plan_skips(run)[node] == "fallback" for node in fallback["float_nodes"])


def _fallback_until_cap(base: Run, new: Run) -> None:
    # an unreachable SQNR floor: fallback goes on until the default cap (10 % of the weighted layers, >= 1)
    assert len(ok(new).json()["fallback"]["float_nodes"]) >= 1


def _fallback_eval(marker: str) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        data = ok(new).json()["fallback"]["eval_data"]
        assert marker in data and data != ok(base).json()["fallback"]["eval_data"]
    return check


def _fallback_samples(n: int) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert ok(new).json()["fallback"]["eval_samples"] == n != ok(base).json()["fallback"]["eval_samples"]
    return check


def _fallback_metric(base: Run, new: Run) -> None:
    assert ok(base).json()["fallback"]["float_metric"] is None
    assert ok(new).json()["fallback"]["float_metric"] is not None


def _html_report(base: Run, new: Run) -> None:
    ok(new)
    html = new.file("out.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Conv_0" in html


def inspect_cases() -> list[Case]:
    return [
        Case("inspect", "model", ["{nhwc_model}", "--format", "json"], changed(_plan_quantized), replace=True),
        Case("inspect", "--format", ["--format", "text"], lambda a, b: _text_vs_json(b, a)),
    ]


def calibrate_cases() -> list[Case]:
    return [
        Case("calibrate", "model", ["{nhwc_model}", "--calib-data", "{nhwc_images}", "--nhwc", "--image-size", "16",
                                    "16", "-o", "{out}.npz"],
             lambda a, b: None if _stats_keys(a) != _stats_keys(b) else pytest.fail("same tensors"), replace=True),
        Case("calibrate", "--output", ["{model}", "--calib-data", "{calib}", "-o", "{out}.stats.npz"],
             _wrote("out.stats.npz"), replace=True),
    ]


def compare_cases() -> list[Case]:
    c = "compare"
    sqnr = lambda r: ok(r).json()["outputs"][0]["sqnr_db"]  # noqa: E731
    return [
        Case(c, "float_model", ["{other}", "{quant}", "--data", "{calib}", "--format", "json"], changed(sqnr),
             replace=True),
        Case(c, "quant_model", ["{model}", "{other}", "--data", "{calib}", "--format", "json"], changed(sqnr),
             replace=True),
        Case(c, "--per-layer", ["--per-layer"], lambda a, b: _per_layer(a, b)),
        Case(c, "--top", ["--top", "1"], _top_rows, base=["{model}", "{quant}", "--data", "{calib}", "--per-layer"]),
        Case(c, "--optimize", ["--optimize"], lambda a, b: _header_changes(a, b, "optimiz")),
        Case(c, "--metric-script", ["--metric-script", "{metric}"], _compare_metric),
        Case(c, "--dump", ["--dump", "{out}"], _dumped(1)),
        Case(c, "--dump-samples", ["--dump-samples", "3"], _dumped(3), base=COMPARE + ["--dump", "{out}"]),
        Case(c, "--format", ["{model}", "{quant}", "--data", "{calib}", "--format", "json"], _text_vs_json,
             base=["{model}", "{quant}", "--data", "{calib}"], replace=True),
        Case(c, "--min-sqnr", ["--min-sqnr", "200"], _gate),
        Case(c, "--min-cosine", ["--min-cosine", "0.9999999"], _gate),
        Case(c, "--min-top1", ["--min-top1", "99"], _gate, base=["{model}", "{other}", "--data", "{calib}"]),
        Case(c, "--max-loss", ["--max-loss", "0"], _gate,
             base=["{model}", "{other}", "--data", "{calib}", "--metric-script", "{metric}"]),
    ]


def _per_layer(base: Run, new: Run) -> None:
    assert not ok(base).json().get("layers") and len(ok(new).json()["layers"]) >= 3


def _top_rows(base: Run, new: Run) -> None:
    rows = lambda r: sum(1 for line in ok(r).out.splitlines() if line.startswith(("a ", "r ", "s ", "d ", "t ", "f ")))  # noqa: E731
    assert rows(new) == 1 < rows(base)


def _header_changes(base: Run, new: Run, word: str) -> None:
    assert word in json.dumps(ok(new).json()).lower() and ok(base).json() != new.json()


def _compare_metric(base: Run, new: Run) -> None:
    assert ok(base).json().get("metric") is None and ok(new).json()["metric"] is not None


def _dumped(samples: int) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        ok(new)
        assert len(list((new.dir / "out" / "float").glob("*.npz"))) == samples
        assert len(list((new.dir / "out" / "quant").glob("*.npz"))) == samples
    return check


def _gate(base: Run, new: Run) -> None:
    assert ok(base).code == 0 and new.code == 1, (new.code, new.err)


def sensitivity_cases() -> list[Case]:
    s = "sensitivity"
    return [
        Case(s, "model", ["{other}", "--calib-data", "{calib}", "--format", "json"],
             changed(lambda r: ok(r).json()["all_quantized"]["sqnr_db"]), replace=True),
        Case(s, "--eval-data", ["--eval-data", "{calib3}"], _eval_data("calib3")),
        Case(s, "--eval-script", ["--eval-script", "{script}"], _eval_data("load_data.py")),
        Case(s, "--eval-samples", ["--eval-samples", "3"], lambda a, b: _eq(ok(b).json()["samples"], 3)),
        Case(s, "--metric-script", ["--metric-script", "{metric}"],
             lambda a, b: _eq((ok(a).json()["float_metric"], ok(b).json()["float_metric"] is not None), (None, True))),
        # statistics from `onnxq calibrate` solve to the same model as calibrating here (bias correction off:
        # with --load-stats alone there are no calibration samples to measure means on)
        # (one method: auto scores its candidates on calibration data, which --load-stats alone does not give)
        Case(s, "--load-stats", ["{model}", "--load-stats", "{stats}", "--eval-data", "{calib}", "--format", "json",
                                 "--config", "{nobc}", "--method", "mse"],
             lambda a, b: _eq(ok(b).json()["all_quantized"]["sqnr_db"], ok(a).json()["all_quantized"]["sqnr_db"]),
             base=SENSITIVITY + ["--config", "{nobc}", "--method", "mse"], replace=True),
        Case(s, "--mode", ["--mode", "one"], _mode_one),
        Case(s, "--top", ["--top", "1"], lambda a, b: _eq(len(_text_rows(b)), 1),
             base=["{model}", "--calib-data", "{calib}"]),
        Case(s, "--format", ["--format", "md"], lambda a, b: _eq(ok(b).out.count("|") > 10, True),
             base=["{model}", "--calib-data", "{calib}"]),
        Case(s, "--workers", ["--workers", "1"], _workers),
        Case(s, "--exact", ["--exact"], lambda a, b: _eq(ok(b).json()["exact"], not ok(a).json()["exact"])),
        Case(s, "--report", ["--report", "{out}.html"], _html_report),
    ]


def _eval_data(marker: str) -> Callable[[Run, Run], None]:
    def check(base: Run, new: Run) -> None:
        assert marker in ok(new).json()["data"] and marker not in ok(base).json()["data"]
    return check


def _eq(a: object, b: object) -> None:
    assert a == b


def _mode_one(base: Run, new: Run) -> None:
    assert ok(base).json()["layers"][0]["all_but"] is not None
    assert ok(new).json()["layers"][0]["all_but"] is None


def _text_rows(run: Run) -> list[str]:
    return [line for line in run.out.splitlines() if line[:2].strip().isdigit()]


def _workers(base: Run, new: Run) -> None:
    # the ranking does not depend on how many configurations run at once
    assert _layers(base) == _layers(new)
    assert ok(new).json()["workers"] == 1


def demo_cases() -> list[Case]:
    d = "demo"
    return [
        Case(d, "--output", ["-o", "{out}.demo.onnx", "--calib-size", "8", "--eval-size", "16"], _wrote("out.demo.onnx"),
             base=["-o", "{out}.onnx", "--calib-size", "8", "--eval-size", "16"], replace=True, slow=True),
        Case(d, "--method", ["--method", "minmax"], lambda a, b: _eq("minmax" in ok(b).out, True), slow=True),
        Case(d, "--target", ["--target", "ort-cpu"], lambda a, b: _eq("ort-cpu" in ok(b).out, True), slow=True),
        Case(d, "--calib-size", ["--calib-size", "4"], lambda a, b: _eq("4 " in ok(b).out, True), slow=True),
        Case(d, "--eval-size", ["--eval-size", "12"], lambda a, b: _eq("12 " in ok(b).out, True), slow=True),
    ]


def all_cases() -> list[Case]:
    cases = quantize_cases() + inspect_cases() + calibrate_cases() + compare_cases() + sensitivity_cases()
    cases += demo_cases()
    for command in ("quantize", "calibrate", "sensitivity", "compare"):
        cases += data_cases(command)
    for command in ("quantize", "inspect", "calibrate", "sensitivity"):
        cases += quant_cases(command)
    return cases


CASES = all_cases()


def parser_flags() -> set[tuple[str, str]]:
    """(subcommand, flag) for every option and positional the CLI defines (help excluded)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = set()
    for name, sp in sub.choices.items():
        for action in sp._actions:
            if isinstance(action, argparse._HelpAction) or action.dest in ("verbose", "quiet"):
                continue
            flag = max(action.option_strings, key=len) if action.option_strings else action.dest
            flags.add((name, flag))
    return flags


def test_every_flag_has_a_case():
    defined = parser_flags()
    covered = {(c.command, c.flag) for c in CASES}
    missing = sorted(defined - covered)
    assert not missing, "flags without a test in tests/cli/test_every_flag.py: " + ", ".join(
        f"{c} {f}" for c, f in missing)
    stale = sorted(covered - defined)
    assert not stale, "cases for flags the CLI no longer has: " + ", ".join(f"{c} {f}" for c, f in stale)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_flag_acts_as_documented(case: Case, ws: Workspace, tmp_path: Path, capsys):
    base = case.base if case.base is not None else BASES[case.command]
    flagged = case.args if case.replace else base + case.args
    before = _base_run(ws, capsys, case.command, list(base))
    after = _run(ws, tmp_path / "flag", capsys, case.command, list(flagged))
    case.check(before, after)

