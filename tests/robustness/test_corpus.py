"""A corpus of bad and awkward inputs: each must give a correct model or one clear error, never lose data.

Every case builds its inputs in ``tmp/in`` and asks for output in ``tmp/out``, then runs twice:
- CLI (``main([...])`` in-process): an error case exits 2 with exactly one ``onnxq: error:`` line naming
  the problem (fragments checked), no traceback; a success case exits 0 and writes a model that passes
  onnx's full check and runs in onnxruntime close to the float model.
- API (where the case has a Python form): the same OnnxqError subclass, with a one-line message.
After each run, every input file is byte-identical and the output folder holds no partial file, no temp
folder, nothing at all for an error case.

Calibration data with NaN or Inf is REJECTED (CalibrationDataError naming the sample and the input): a
single NaN poisons min/max and histogram ranges, and skipping samples silently would calibrate on less
data than the user gave.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import robust_models as rm
from helpers import save_arrays, save_onnx

import onnxq
from onnxq import api, runtime
from onnxq.cli import main
from onnxq.collect import data as data_mod
from onnxq.errors import (
    CalibrationDataError,
    ConfigError,
    ModelLoadError,
    OnnxqError,
    OutputError,
    UnsupportedModelError,
)
from onnxq.preprocess.names import name_nodes


@dataclass
class Run:
    """What a case hands the runner: CLI arguments and, optionally, the same request through the API."""

    argv: list[str]
    api: Callable[[], object] | None = None
    output: Path | None = None  # the model the CLI is asked to write (success cases check it)
    model: onnx.ModelProto | None = None  # the float model, for the success check


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path, Path], Run]  # (input folder, output folder) -> Run
    error: type[OnnxqError] | None  # None: the case must succeed
    says: tuple[str, ...] = ()  # fragments of the error line (case-insensitive)
    check: Callable[[onnx.ModelProto, Run], None] | None = None  # extra checks on a written model


# ----------------------------------------------------------------------------- setup helpers


def _save(model: onnx.ModelProto, folder: Path, name: str = "m.onnx") -> Path:
    return save_onnx(model, folder / name)


def _npy_dir(folder: Path, arrays: list[np.ndarray], name: str = "calib") -> Path:
    return save_arrays(folder / name, arrays)


def _npz_dir(folder: Path, feeds: list[dict[str, np.ndarray]], name: str = "calib") -> Path:
    out = folder / name
    out.mkdir()
    for i, f in enumerate(feeds):
        np.savez(out / f"{i:03d}.npz", **f)
    return out


def _images(n: int = 4, shape=(3, 8, 8), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _quantize(model_path: Path, output: Path, data, config: onnxq.QuantConfig | None = None):
    def call():
        return api.quantize(model_path, data, config).save(output)

    return call


def _conv_with(arrays: list[np.ndarray]) -> Callable[[Path, Path], Run]:
    """Setup: the conv model with a folder of .npy samples."""

    def setup(inp: Path, out: Path) -> Run:
        m = _save(rm.conv_model(), inp)
        calib = _npy_dir(inp, arrays)
        q = out / "q.onnx"
        return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)

    return setup


def _conv_with_model(build: Callable[[], onnx.ModelProto]) -> Callable[[Path, Path], Run]:
    """Setup: a conv-shaped model with a folder of real [1, 3, 8, 8] samples."""

    def setup(inp: Path, out: Path) -> Run:
        m = _save(build(), inp)
        calib = _npy_dir(inp, [x[np.newaxis] for x in _images(3)])
        q = out / "q.onnx"
        return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)

    return setup


def _model_random(
    build: Callable[[], onnx.ModelProto],
    *extra: str,
    n: int = 4,
    config: onnxq.QuantConfig | None = None,
    dims=None,
) -> Callable[[Path, Path], Run]:
    """Setup: a model with --random N samples (and the same through the API)."""

    def setup(inp: Path, out: Path) -> Run:
        model = build()
        m = _save(model, inp)
        q = out / "q.onnx"
        argv = ["quantize", str(m), "-o", str(q), "--random", str(n), *extra]

        def call():
            pre, _ = api.prepare(m)
            source = data_mod.random_data(data_mod.input_specs_from_model(pre), n, dims=dims)
            return api.quantize(m, source, config).save(q)

        return Run(argv, call, q, model)

    return setup


def _bad_model_file(write: Callable[[Path], None]) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        m = inp / "m.onnx"
        write(m)
        q = out / "q.onnx"
        feeds = [{"x": np.zeros((1, 3, 8, 8), np.float32)}]
        return Run(["quantize", str(m), "-o", str(q), "--random", "2"], _quantize(m, q, feeds), q)

    return setup


# ----------------------------------------------------------------------------- success checks


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _subgraph_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    out = []
    for node in model.graph.node:
        for attr in node.attribute:
            for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                out.extend(g.node)
    return out


def _report(run: Run) -> dict:
    return json.loads(Path(str(run.output) + ".report.json").read_text())


def check_subgraphs_quantized(model: onnx.ModelProto, run: Run) -> None:
    """Control flow: the outer weighted op and the weighted ops inside the bodies are quantized (Q/DQ in
    the body), the control-flow node itself is skipped as such, and every body op is still there."""
    inner = _subgraph_nodes(model)
    original = _subgraph_nodes(run.model)
    quantized_ops = {"QuantizeLinear", "DequantizeLinear"}
    assert [n.op_type for n in inner if n.op_type not in quantized_ops] == [n.op_type for n in original]
    assert "DequantizeLinear" in {n.op_type for n in inner}
    assert "QuantizeLinear" in _ops(model)
    rules = {s["node"]: s["rule"] for s in _report(run)["skipped"]}
    assert any(rule == "control-flow" for rule in rules.values()), rules
    weighted = {n.name for n in original if n.op_type in ("Conv", "MatMul", "Gemm")}
    assert weighted and weighted <= set(_report(run)["quantized_nodes"])


def check_recurrent_float(model: onnx.ModelProto, run: Run) -> None:
    rules = {s["node"]: s["rule"] for s in _report(run)["skipped"]}
    assert rules.get("rnn") == "recurrent", rules
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    rnn = next(n for n in model.graph.node if n.name == "rnn")
    assert all(producer.get(i) != "DequantizeLinear" for i in rnn.input if i)  # LSTM/GRU read float
    quantized = _report(run)["quantized_nodes"]
    assert {"proj_in", "proj_out"} <= set(quantized), quantized


def check_zero_range(model: onnx.ModelProto, run: Run) -> None:
    """A constant activation gets a finite, positive scale (never 0, NaN or Inf)."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert scales
    for s in scales:
        assert np.all(np.isfinite(s)) and np.all(s > 0)


def check_quantized(op_names: tuple[str, ...]) -> Callable[[onnx.ModelProto, Run], None]:
    def check(model: onnx.ModelProto, run: Run) -> None:
        quantized = _report(run)["quantized_nodes"]
        assert set(op_names) <= set(quantized), quantized

    return check


# ----------------------------------------------------------------------------- case setups


def setup_protobuf_not_model(inp: Path, out: Path) -> Run:
    tensor = onnx.numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "t")
    return _bad_model_file(lambda p: p.write_bytes(tensor.SerializeToString()))(inp, out)


def setup_truncated(inp: Path, out: Path) -> Run:
    data = rm.conv_model().SerializeToString()
    return _bad_model_file(lambda p: p.write_bytes(data[: len(data) // 2]))(inp, out)


def setup_folder_as_model(inp: Path, out: Path) -> Run:
    (inp / "m.onnx").mkdir()
    (inp / "m.onnx" / "readme.txt").write_text("a folder, not a model")
    q = out / "q.onnx"
    return Run(
        ["quantize", str(inp / "m.onnx"), "-o", str(q), "--random", "2"],
        lambda: api.prepare(inp / "m.onnx"),
        q,
    )


def setup_missing_model(inp: Path, out: Path) -> Run:
    q = out / "q.onnx"
    return Run(
        ["quantize", str(inp / "nope.onnx"), "-o", str(q), "--random", "2"],
        lambda: api.prepare(inp / "nope.onnx"),
        q,
    )


def setup_opset_too_new(inp: Path, out: Path) -> Run:
    model = rm.conv_model()
    model.opset_import[0].version = 99
    return _bad_model_file(lambda p: p.write_bytes(model.SerializeToString()))(inp, out)


NEWEST_OPSET = onnx.defs.onnx_opset_version()
# onnx may define opsets onnxruntime cannot quantize at (onnx 1.23 knows 28, onnxruntime 1.32 stops at 27)
QDQ_AT_NEWEST = runtime.qdq_opset_supported(NEWEST_OPSET)


def setup_newest_opset(inp: Path, out: Path) -> Run:
    """A model at the newest opset onnx knows."""
    model = rm.conv_model()
    model.opset_import[0].version = NEWEST_OPSET
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    return _bad_model_file(lambda p: p.write_bytes(model.SerializeToString()))(inp, out)


def setup_two_inputs(feeds: list[dict[str, np.ndarray]]) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        m = _save(rm.two_input_model(), inp)
        calib = _npz_dir(inp, feeds)
        q = out / "q.onnx"
        return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)

    return setup


def _ab(*names: str, n: int = 3, dtype=np.float32) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{k: rng.standard_normal((1, 4)).astype(dtype) for k in names} for _ in range(n)]


def setup_embedding(ids_dtype, high: int = 100) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        model = rm.embedding_model()
        m = _save(model, inp)
        rng = np.random.default_rng(0)
        feeds = [{"ids": rng.integers(0, high, size=(1, 5)).astype(ids_dtype)} for _ in range(4)]
        calib = _npz_dir(inp, feeds)
        q = out / "q.onnx"
        return Run(
            [
                "quantize",
                str(m),
                "-o",
                str(q),
                "--calib-data",
                str(calib),
                "--report-json",
                str(q) + ".report.json",
            ],
            _quantize(m, q, calib),
            q,
            model,
        )

    return setup


def setup_dynamic_varying(inp: Path, out: Path) -> Run:
    model = rm.dynamic_model()
    m = _save(model, inp)
    rng = np.random.default_rng(0)
    calib = _npy_dir(inp, [rng.standard_normal((1, 3, s, s)).astype(np.float32) for s in (8, 12, 6)])
    q = out / "q.onnx"
    return Run(
        ["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q, model
    )


def setup_custom_op(inp: Path, out: Path) -> Run:
    m = _save(rm.custom_domain_model(), inp)
    q = out / "q.onnx"
    calib = _npy_dir(inp, _images(2))
    return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)


def _with_report(build: Callable[[], onnx.ModelProto], n: int = 3) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        run = _model_random(build, n=n)(inp, out)
        run.argv += ["--report-json", str(run.output) + ".report.json"]
        return run

    return setup


def setup_external(location: str | None, *, truncate: bool = False, delete: bool = False):
    def setup(inp: Path, out: Path) -> Run:
        model = rm.conv_model()
        m = inp / "m.onnx"
        rm.save_with_external_data(rm.conv_model(), m)  # onnx's save moves the bytes out of the proto it gets
        if location is not None:
            target = (inp / location) if not os.path.isabs(location) else Path(location)
            rm.point_external_data(m, location)
            if not delete:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes((inp / "weights.bin").read_bytes())
        if truncate:
            data = (inp / "weights.bin").read_bytes()
            (inp / "weights.bin").write_bytes(data[: len(data) // 3])
        if delete:
            (inp / "weights.bin").unlink()
        q = out / "q.onnx"
        calib = _npy_dir(inp, _images(2))
        return Run(
            ["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q, model
        )

    return setup


def setup_output(kind: str) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        m = _save(rm.conv_model(), inp)
        calib = _npy_dir(inp, _images(2))
        q = {
            "same": m,
            "same-spelled-differently": inp / ".." / inp.name / "." / "m.onnx",
            "symlink": out / "link.onnx",
            "missing-folder": out / "no" / "such" / "q.onnx",
            "is-folder": out,
            "parent-is-file": inp / "m.onnx" / "q.onnx",
        }.get(kind)
        if kind == "symlink":
            os.symlink(m, q)
        if kind == "external-data":
            rm.save_with_external_data(rm.conv_model(), m)
            q = inp / "weights.bin"
        if kind == "unwritable":
            if os.geteuid() == 0:  # root ignores permission bits: use a folder no one can create files in
                q = Path("/sys/onnxq-robustness-q.onnx")
            else:
                locked = out / "locked"
                locked.mkdir()
                locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
                q = locked / "q.onnx"
        return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)

    return setup


def setup_side_output(flag: str) -> Callable[[Path, Path], Run]:
    """--report-json / --save-stats into a missing folder: refused before any work, model not written."""

    def setup(inp: Path, out: Path) -> Run:
        m = _save(rm.conv_model(), inp)
        calib = _npy_dir(inp, _images(2))
        q = out / "q.onnx"
        return Run(
            ["quantize", str(m), "-o", str(q), "--calib-data", str(calib), flag, str(out / "no" / "f")],
            None,
            q,
        )

    return setup


def setup_config(name: str, text: str) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        m = _save(rm.conv_model(), inp)
        cfg = inp / name
        cfg.write_text(text.replace("MARKER", str(out / "pwned")))
        q = out / "q.onnx"
        return Run(
            ["quantize", str(m), "-o", str(q), "--random", "2", "--config", str(cfg)],
            lambda: onnxq.load_config(cfg),
            q,
        )

    return setup


def setup_script(body: str) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        m = _save(rm.conv_model(), inp)
        script = inp / "loader.py"
        script.write_text(body)
        q = out / "q.onnx"

        def call():
            return api.quantize(m, data_mod.from_script(script)).save(q)

        return Run(["quantize", str(m), "-o", str(q), "--calib-script", str(script)], call, q)

    return setup


def setup_stats(kind: str) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        m = _save(rm.conv_model(), inp)
        stats = inp / "stats.npz"
        if kind == "other-model":
            other = _save(rm.two_input_model(), inp, "other.onnx")
            s = api.calibrate(
                other, [{"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}]
            ).stats
            from onnxq.collect.stats_file import save_stats

            save_stats(stats, s)
        else:
            np.savez(stats, something=np.arange(3))
        q = out / "q.onnx"
        return Run(["quantize", str(m), "-o", str(q), "--load-stats", str(stats)], None, q)

    return setup


def _nan(shape=(3, 8, 8), value=np.nan) -> list[np.ndarray]:
    arrays = _images(3)
    arrays[1][0, 2, 3] = value
    return arrays


PICKLED = np.array([{"a": 1}, None], dtype=object)


def setup_pickled(inp: Path, out: Path) -> Run:
    m = _save(rm.conv_model(), inp)
    calib = inp / "calib"
    calib.mkdir()
    np.save(calib / "000.npy", PICKLED, allow_pickle=True)  # what an attacker (or a careless save) leaves
    q = out / "q.onnx"
    return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)


def setup_corrupt_npy(inp: Path, out: Path) -> Run:
    m = _save(rm.conv_model(), inp)
    calib = _npy_dir(inp, _images(2))
    data = (calib / "001.npy").read_bytes()
    (calib / "001.npy").write_bytes(data[:100])
    q = out / "q.onnx"
    return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)


def setup_empty_dir(inp: Path, out: Path) -> Run:
    m = _save(rm.conv_model(), inp)
    calib = inp / "calib"
    calib.mkdir()
    (calib / "notes.txt").write_text("no arrays here")
    q = out / "q.onnx"
    return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)


def setup_data_dir_missing(inp: Path, out: Path) -> Run:
    m = _save(rm.conv_model(), inp)
    q = out / "q.onnx"
    calib = inp / "no-such-calib"
    return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)


def setup_npy_for_two_inputs(inp: Path, out: Path) -> Run:
    m = _save(rm.two_input_model(), inp)
    calib = _npy_dir(inp, [np.ones((1, 4), np.float32)] * 2)
    q = out / "q.onnx"
    return Run(["quantize", str(m), "-o", str(q), "--calib-data", str(calib)], _quantize(m, q, calib), q)


def setup_cli_only(build: Callable[[], onnx.ModelProto], *extra: str) -> Callable[[Path, Path], Run]:
    def setup(inp: Path, out: Path) -> Run:
        m = _save(build(), inp)
        q = out / "q.onnx"
        return Run(["quantize", str(m), "-o", str(q), *extra], None, q)

    return setup


TRT = onnxq.QuantConfig(target="tensorrt")
ORT = onnxq.QuantConfig(target="ort-cpu")

CASES = [
    # --- the model file itself
    Case("missing-model-file", setup_missing_model, ModelLoadError, ("not found", "check the path")),
    Case(
        "empty-model-file",
        _bad_model_file(lambda p: p.write_bytes(b"")),
        ModelLoadError,
        ("is empty", "re-export"),
    ),
    Case("truncated-model", setup_truncated, ModelLoadError, ("not an onnx model", "re-export")),
    Case(
        "random-bytes",
        _bad_model_file(lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096))),
        ModelLoadError,
        ("not an onnx model",),
    ),
    Case("protobuf-not-a-model", setup_protobuf_not_model, ModelLoadError, ("not an onnx model",)),
    Case(
        "onnx-text-not-binary",
        _bad_model_file(lambda p: p.write_text("<ir_version: 8>\ng (float x) => (y) {}")),
        ModelLoadError,
        ("not an onnx model",),
    ),
    Case("folder-given-as-model", setup_folder_as_model, ModelLoadError, ("is a folder",)),
    Case("opset-newer-than-supported", setup_opset_too_new, UnsupportedModelError, ("opset 99", "re-export")),
    Case(
        "opset-newer-than-onnxruntime-quantizelinear",
        setup_newest_opset,
        None if QDQ_AT_NEWEST else UnsupportedModelError,
        () if QDQ_AT_NEWEST else (f"opset {NEWEST_OPSET}", "QuantizeLinear", "re-export the model at opset"),
    ),
    Case(
        "invalid-model-contradicting-shapes",
        _bad_model_file(lambda p: p.write_bytes(rm.contradictory_shape_model().SerializeToString())),
        UnsupportedModelError,
        ("input model itself fails validation", "shape", "fix the model"),
    ),
    # --- awkward models
    Case(
        "no-float-tensors",
        _model_random(rm.int_only_model),
        UnsupportedModelError,
        ("nothing to quantize", "float"),
    ),
    Case("integer-only-inputs", setup_embedding(np.int64), None, check=check_quantized(("proj",))),
    Case("integer-inputs-given-as-int32", setup_embedding(np.int32), None, check=check_quantized(("proj",))),
    Case(
        "integer-inputs-out-of-range-for-model",
        setup_embedding(np.int64, high=1000),
        UnsupportedModelError,
        ("onnxruntime failed", "data"),
    ),
    Case(
        "dynamic-dims-no-values",
        _model_random(rm.dynamic_model),
        CalibrationDataError,
        ("dynamic dimension", "--dim"),
    ),
    Case(
        "dynamic-dims-with-values",
        _model_random(rm.dynamic_model, "--dim", "H=8", "--dim", "W=8", dims={"H": 8, "W": 8}),
        None,
    ),
    Case("dynamic-dims-varying-sample-sizes", setup_dynamic_varying, None),
    Case(
        "input-without-shape-random-data",
        _model_random(rm.shapeless_input_model),
        CalibrationDataError,
        ("declares no shape", "real calibration data"),
    ),
    Case(
        "input-without-shape-real-data",
        _conv_with_model(rm.shapeless_input_model),
        UnsupportedModelError,
        ("graph input 'x' declares no shape",),
    ),
    Case(
        "output-without-shape",
        _model_random(rm.shapeless_output_model),
        UnsupportedModelError,
        ("graph output 'y' declares no shape", "fix the model"),
    ),
    Case(
        "zero-range-activation-tensorrt",
        _with_report(rm.constant_activation_model),
        None,
        check=check_zero_range,
    ),
    Case(
        "zero-range-activation-ort-cpu",
        lambda i, o: _add(_with_report(rm.constant_activation_model)(i, o), "--target", "ort-cpu"),
        None,
        check=check_zero_range,
    ),
    Case("constant-calibration-data", _conv_with([np.full((3, 8, 8), 0.5, np.float32)] * 3), None),
    Case("custom-domain-op", setup_custom_op, UnsupportedModelError, ("com.example.ops", "FancyNorm")),
    Case("control-flow-if", _with_report(rm.if_model), None, check=check_subgraphs_quantized),
    Case("control-flow-loop", _with_report(rm.loop_model), None, check=check_subgraphs_quantized),
    Case("control-flow-scan", _with_report(rm.scan_model), None, check=check_subgraphs_quantized),
    Case(
        "recurrent-lstm", _with_report(lambda: rm.recurrent_model("LSTM")), None, check=check_recurrent_float
    ),
    Case("recurrent-gru", _with_report(lambda: rm.recurrent_model("GRU")), None, check=check_recurrent_float),
    Case("old-ir3-initializers-as-inputs", _model_random(rm.old_ir_model), None),
    Case("old-ir3-old-opset", _model_random(lambda: rm.old_ir_model(opset=9)), None),
    Case("nodes-not-topologically-sorted", _model_random(rm.unsorted_model), None),
    Case("unnamed-and-duplicate-node-names", _model_random(rm.unnamed_nodes_model), None),
    Case("internal-tensor-is-graph-output", _model_random(rm.exposed_internal_model), None),
    # --- calibration data
    Case(
        "data-wrong-shape",
        _conv_with([np.zeros((3, 9, 9), np.float32)]),
        CalibrationDataError,
        ("sample 0", "'x'", "axis 2 is 9, not 8"),
    ),
    Case(
        "data-wrong-rank",
        _conv_with([np.zeros((8, 8), np.float32)]),
        CalibrationDataError,
        ("'x'", "rank 2 instead of 4"),
    ),
    Case(
        "data-wrong-dtype-float-for-int",
        setup_embedding(np.float32),
        CalibrationDataError,
        ("'ids'", "float values cannot feed an integer input"),
    ),
    Case(
        "data-wrong-dtype-strings",
        _conv_with([np.full((3, 8, 8), "a")]),
        CalibrationDataError,
        ("'x'", "float32"),
    ),
    Case("data-missing-input", setup_two_inputs(_ab("a")), CalibrationDataError, ("missing input(s) 'b'",)),
    Case(
        "data-extra-input",
        setup_two_inputs(_ab("a", "b", "c")),
        CalibrationDataError,
        ("unknown input(s) 'c'",),
    ),
    Case("data-nan", _conv_with(_nan()), CalibrationDataError, ("sample 1", "001.npy", "'x'", "nan or inf")),
    Case("data-inf", _conv_with(_nan(value=np.inf)), CalibrationDataError, ("sample 1", "'x'", "nan or inf")),
    Case("data-empty-folder", setup_empty_dir, CalibrationDataError, ("no .npy or .npz files",)),
    Case("data-folder-missing", setup_data_dir_missing, CalibrationDataError, ("does not exist",)),
    Case("data-pickled-objects", setup_pickled, CalibrationDataError, ("never unpickles",)),
    Case("data-corrupt-npy", setup_corrupt_npy, CalibrationDataError, ("001.npy", "re-save")),
    Case("data-npy-for-two-input-model", setup_npy_for_two_inputs, CalibrationDataError, (".npz",)),
    Case(
        "data-unnamed-npz-arrays",
        setup_two_inputs([{"arr_0": np.ones((1, 4), np.float32)}]),
        CalibrationDataError,
        ("unnamed arrays", "np.savez"),
    ),
    Case(
        "calib-script-raises",
        setup_script("def load_data():\n    raise RuntimeError('disk gone')\n    yield\n"),
        CalibrationDataError,
        ("loader.py", "line 2", "disk gone"),
    ),
    Case(
        "calib-script-yields-nothing",
        setup_script("def load_data():\n    return []\n"),
        CalibrationDataError,
        ("no samples",),
    ),
    Case("calib-script-without-load-data", setup_script("x = 1\n"), CalibrationDataError, ("load_data()",)),
    Case("stats-from-another-model", setup_stats("other-model"), CalibrationDataError, ("no statistics",)),
    Case("stats-file-not-onnxq", setup_stats("garbage"), CalibrationDataError, ("stats",)),
    # --- external data
    Case("external-data", setup_external(None), None),
    Case("external-data-in-subfolder", setup_external("data/w.bin"), None),
    Case(
        "external-data-outside-folder",
        setup_external("../outside.bin"),
        ModelLoadError,
        ("outside the model's folder",),
    ),
    Case(
        "external-data-absolute-path",
        setup_external("/tmp/onnxq-robustness-abs.bin", delete=True),
        ModelLoadError,
        ("outside the model's folder",),
    ),
    Case("external-data-missing-file", setup_external(None, delete=True), ModelLoadError, ("not found",)),
    Case(
        "external-data-truncated-file",
        setup_external(None, truncate=True),
        ModelLoadError,
        ("external data", "re-export"),
    ),
    # --- outputs
    Case("output-is-input", setup_output("same"), OutputError, ("is the input model",)),
    Case(
        "output-is-input-spelled-differently",
        setup_output("same-spelled-differently"),
        OutputError,
        ("is the input model",),
    ),
    Case("output-is-symlink-to-input", setup_output("symlink"), OutputError, ("is the input model",)),
    Case("output-folder-missing", setup_output("missing-folder"), OutputError, ("does not exist",)),
    Case("output-parent-is-a-file", setup_output("parent-is-file"), OutputError, ("does not exist",)),
    Case("output-is-a-folder", setup_output("is-folder"), OutputError, ("is a folder",)),
    Case("output-is-input-external-data", setup_output("external-data"), OutputError, ("external data",)),
    Case("output-folder-unwritable", setup_output("unwritable"), OutputError, ("writ",)),
    Case("report-json-folder-missing", setup_side_output("--report-json"), OutputError, ("does not exist",)),
    Case("save-stats-folder-missing", setup_side_output("--save-stats"), OutputError, ("does not exist",)),
    # --- options and config files
    Case(
        "config-file-is-python",
        setup_config("q.py", "open('MARKER', 'w').write('ran')\n"),
        ConfigError,
        (".toml or .json",),
    ),
    Case(
        "config-toml-unknown-key",
        setup_config("q.toml", "[activations]\nmethd = 'entropy'\n"),
        ConfigError,
        ("methd", "did you mean"),
    ),
    Case("config-toml-syntax-error", setup_config("q.toml", "target = \n"), ConfigError, ("not valid toml",)),
    Case("config-bad-value", setup_config("q.json", '{"target": "tpu"}'), ConfigError, ("tpu", "tensorrt")),
    Case("random-count-zero", setup_cli_only(rm.conv_model, "--random", "0"), ConfigError, ("positive",)),
    Case(
        "two-data-sources",
        setup_cli_only(rm.conv_model, "--random", "2", "--calib-data", "x"),
        ConfigError,
        ("exactly one data source",),
    ),
    Case(
        "bad-dim-flag",
        setup_cli_only(rm.dynamic_model, "--random", "2", "--dim", "H=big"),
        ConfigError,
        ("--dim",),
    ),
]


def _add(run: Run, *extra: str) -> Run:
    run.argv += list(extra)
    return run


# ----------------------------------------------------------------------------- the runner


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("onnxq: error:")]


def _check_written(run: Run, case: Case) -> None:
    q = run.output
    model = onnx.load(str(q))
    onnx.checker.check_model(str(q), full_check=True)
    session = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    float_model = run.model if run.model is not None else onnx.load(str(q))
    feed = rm.feed_for(float_model)
    if any(v.dtype.kind in "iu" for v in feed.values()):
        feed = {k: np.clip(v, 0, 99) for k, v in feed.items()}
    outputs = session.run(None, feed)
    assert all(np.all(np.isfinite(o)) for o in outputs if np.asarray(o).dtype.kind == "f")
    if run.model is not None and len(run.model.graph.input) == len(model.graph.input):
        float_model = name_nodes(run.model)[0]  # onnxruntime refuses duplicate node names; onnxq renames them
        reference = ort.InferenceSession(float_model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected = reference.run(None, feed)
        for got, want in zip(outputs, expected, strict=True):
            got, want = np.ravel(got).astype(np.float64), np.ravel(want).astype(np.float64)
            if np.linalg.norm(want) > 0:
                cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-12))
                assert cos > 0.9, f"quantized output far from float (cosine {cos:.3f})"
    if case.check is not None:
        case.check(model, run)


def _planted(case: Case, run: Run) -> set[str]:
    """Files the case itself put in the output folder (the symlink pointing at the input)."""
    return {run.output.name} if case.id == "output-is-symlink-to-input" else set()


def _leftovers(out: Path, allowed: set[str]) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name not in allowed)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli(case: Case, tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    run = case.setup(inp, out)
    before = rm.snapshot(inp)
    capsys.readouterr()
    code = main(run.argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert rm.snapshot(inp) == before, "an input file changed"
    assert not (out / "pwned").exists(), "a config file ran code"
    if case.error is None:
        assert code == 0, captured.err
        assert not _error_lines(captured.err)
        kept = {run.output.name, run.output.name + ".report.json"}
        assert _leftovers(out, kept) == [], "temporary files left behind"
        _check_written(run, case)
        return
    assert code == 2, f"exit code {code}: {captured.err}"
    lines = _error_lines(captured.err)
    assert len(lines) == 1, captured.err
    for fragment in case.says:
        assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in: {lines[0]}"
    assert _leftovers(out, _planted(case, run)) == [], "an error left files in the output folder"
    assert captured.out.strip() == "", "an error printed a report"


API_CASES = [c for c in CASES if c.error is not None]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api(case: Case, tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    run = case.setup(inp, out)
    if run.api is None:
        pytest.skip("CLI-only case (a command-line flag)")
    before = rm.snapshot(inp)
    with pytest.raises(case.error) as info:
        run.api()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    for fragment in case.says:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in: {message}"
    assert rm.snapshot(inp) == before
    assert _leftovers(out, _planted(case, run)) == []


def test_corpus_size() -> None:
    """The issue asks for at least 30 cases; ids must be unique so each is reported on its own."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30
    assert sum(c.error is None for c in CASES) >= 10 and sum(c.error is not None for c in CASES) >= 30
