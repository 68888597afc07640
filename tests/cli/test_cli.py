"""CLI: exit codes, one-line errors without tracebacks, outputs written atomically."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import error_line

from onnxq.cli import main


def test_quantize_writes_a_valid_model_and_reports(conv_model, calib_dir, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(conv_model), "-o", str(out), "--calib-data", str(calib_dir), "--method", "entropy"])
    assert code == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    text = capsys.readouterr().out
    assert "quantized  1 nodes" in text and "wrote" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_quantize_json_report_and_stats_round_trip(conv_model, calib_dir, tmp_path, capsys):
    stats = tmp_path / "s.npz"
    assert main(["calibrate", str(conv_model), "--calib-data", str(calib_dir), "-o", str(stats)]) == 0
    capsys.readouterr()
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(conv_model), "-o", str(out), "--load-stats", str(stats), "--method", "mse",
                 "--format", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "mse" and report["data"] == "precomputed statistics"


def test_inspect_lists_plan_and_reasons(conv_model, capsys):
    assert main(["inspect", str(conv_model)]) == 0
    out = capsys.readouterr().out
    assert "weighted-op-input" in out and "Relu" in out and "left in float" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["quantize", "missing.onnx", "-o", "o.onnx", "--random", "2"], "not found"),
        (["quantize", "{model}", "-o", "{model}", "--random", "2"], "is the input model"),
        (["quantize", "{model}", "-o", "{tmp}/nodir/o.onnx", "--random", "2"], "does not exist"),
        (["quantize", "{model}", "-o", "{tmp}/o.onnx"], "give exactly one data source"),
        (["quantize", "{model}", "-o", "{tmp}/o.onnx", "--calib-data", "{tmp}/empty"], "empty"),
        (["quantize", "{model}", "-o", "{tmp}/o.onnx", "--random", "2", "--exclude-node", "("], "regular expression"),
    ],
)
def test_bad_input_exits_2_with_one_line(conv_model, tmp_path, capsys, args, needle):
    (tmp_path / "empty").mkdir()
    argv = [a.format(model=conv_model, tmp=tmp_path) for a in args]
    before = conv_model.read_bytes()
    assert main(argv) == 2
    line = error_line(capsys)
    assert needle in line
    assert conv_model.read_bytes() == before
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("value,ok", [("", True), (" 1 ", True), ("x", False), ("-2", False), ("1.5", False)])
def test_onnxq_threads_is_checked_not_misreported(conv_model, tmp_path, capsys, monkeypatch, value, ok):
    """An unusable ONNXQ_THREADS is named as such (it used to surface as an opset error); empty = unset."""
    monkeypatch.setenv("ONNXQ_THREADS", value)
    out = tmp_path / "o.onnx"
    code = main(["quantize", str(conv_model), "-o", str(out), "--random", "2"])
    if ok:
        assert code == 0 and out.exists()
    else:
        assert code == 2 and not out.exists()
        assert "ONNXQ_THREADS" in error_line(capsys)


def test_wrong_shape_data_names_input_expected_and_got(conv_model, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((5, 8, 8), np.float32))
    assert main(["quantize", str(conv_model), "-o", str(tmp_path / "o.onnx"), "--calib-data", str(folder)]) == 2
    line = error_line(capsys)
    assert "'x'" in line and "expected" in line and "got" in line


def test_usage_error_exits_2(capsys):
    assert main(["quantize"]) == 2
    assert main([]) == 2


@pytest.mark.slow  # a real model quantized and evaluated (a cheaper demo: test_issue12_reports.py)
def test_demo_runs_on_embedded_model(tmp_path, capsys):
    out = tmp_path / "demo.onnx"
    assert main(["demo", "-o", str(out), "--calib-size", "8", "--eval-size", "20"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and out.exists()


def test_mode_flag_overrides_the_config_files_mode(conv_model, calib_dir, tmp_path, capsys):
    """Flags override --config: `--mode static` with a config that says dynamic calibrates Q/DQ."""
    config = tmp_path / "q.toml"
    config.write_text('mode = "dynamic"\ntarget = "ort-cpu"\n')
    ops = {}
    for mode in ("static", None):
        out = tmp_path / f"{mode}.onnx"
        argv = ["quantize", str(conv_model), "-o", str(out), "--config", str(config), "--format", "json"]
        argv += ["--calib-data", str(calib_dir), "--mode", "static"] if mode else []
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["config"]["mode"] == (mode or "dynamic")
        ops[mode] = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops["static"] and "QuantizeLinear" not in ops[None]
