"""CLI: exit codes, one-line errors without tracebacks, outputs written atomically."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from onnxq.cli import main
from onnxq.testing import model_from_text

CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,4,8,8] y) {
  c = Conv <pads=[1,1,1,1]> (x, W, B)
  y = Relu (c)
}
"""


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(model_from_text(CONV, weights={"W": (4, 3, 3, 3), "B": (4,)}), str(path))
    return path


@pytest.fixture()
def calib_dir(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(folder / f"{i:03d}.npy", rng.standard_normal((3, 8, 8)).astype(np.float32))
    return folder


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in err
    return lines[-1]


def test_quantize_writes_a_valid_model_and_reports(model_path, calib_dir, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(model_path), "-o", str(out), "--calib-data", str(calib_dir), "--method", "entropy"])
    assert code == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    text = capsys.readouterr().out
    assert "quantized  1 nodes" in text and "wrote" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_quantize_json_report_and_stats_round_trip(model_path, calib_dir, tmp_path, capsys):
    stats = tmp_path / "s.npz"
    assert main(["calibrate", str(model_path), "--calib-data", str(calib_dir), "-o", str(stats)]) == 0
    capsys.readouterr()
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(model_path), "-o", str(out), "--load-stats", str(stats), "--method", "mse",
                 "--format", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "mse" and report["data"] == "precomputed statistics"


def test_inspect_lists_plan_and_reasons(model_path, capsys):
    assert main(["inspect", str(model_path)]) == 0
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
def test_bad_input_exits_2_with_one_line(model_path, tmp_path, capsys, args, needle):
    (tmp_path / "empty").mkdir()
    argv = [a.format(model=model_path, tmp=tmp_path) for a in args]
    before = model_path.read_bytes()
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert needle in line
    assert model_path.read_bytes() == before
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("value,ok", [("", True), (" 1 ", True), ("x", False), ("-2", False), ("1.5", False)])
def test_onnxq_threads_is_checked_not_misreported(model_path, tmp_path, capsys, monkeypatch, value, ok):
    """An unusable ONNXQ_THREADS is named as such (it used to surface as an opset error); empty = unset."""
    monkeypatch.setenv("ONNXQ_THREADS", value)
    out = tmp_path / "o.onnx"
    code = main(["quantize", str(model_path), "-o", str(out), "--random", "2"])
    if ok:
        assert code == 0 and out.exists()
    else:
        assert code == 2 and not out.exists()
        assert "ONNXQ_THREADS" in one_error_line(capsys.readouterr().err)


def test_wrong_shape_data_names_input_expected_and_got(model_path, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((5, 8, 8), np.float32))
    assert main(["quantize", str(model_path), "-o", str(tmp_path / "o.onnx"), "--calib-data", str(folder)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'x'" in line and "expected" in line and "got" in line


def test_usage_error_exits_2(capsys):
    assert main(["quantize"]) == 2
    assert main([]) == 2


def test_demo_runs_on_embedded_model(tmp_path, capsys):
    out = tmp_path / "demo.onnx"
    assert main(["demo", "-o", str(out), "--calib-size", "8", "--eval-size", "20"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and out.exists()
