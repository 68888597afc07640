"""``onnxq quantize --min-sqnr DB`` without ``--auto-fallback``: a gate on auto's held-out result."""

from __future__ import annotations

import json

import pytest
from helpers import save_random_arrays

from onnxq.cli import main


@pytest.fixture()
def calib12(tmp_path):
    return save_random_arrays(tmp_path / "calib12", 12, (3, 8, 8))  # enough feeds to hold 2 out


def _quantize(model, calib, out, *flags):
    return main(["quantize", str(model), "-o", str(out), "--calib-data", str(calib), *flags])


def test_min_sqnr_met_writes_the_model(conv_model, calib12, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert _quantize(conv_model, calib12, out, "--min-sqnr", "-50", "--format", "json") == 0
    report = json.loads(capsys.readouterr().out)
    assert out.exists() and report["choice"]["held_out"]
    assert min(o["sqnr_db"] for o in report["choice"]["outputs"]) >= -50


def test_min_sqnr_missed_writes_nothing_and_exits_1(conv_model, calib12, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert _quantize(conv_model, calib12, out, "--min-sqnr", "99") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "under --min-sqnr 99: nothing written" in err
    assert "2 of 12 calibration feeds held out" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_min_sqnr_with_an_explicit_method_needs_auto_fallback(conv_model, calib12, tmp_path, capsys):
    assert _quantize(conv_model, calib12, tmp_path / "q.onnx", "--method", "minmax", "--min-sqnr", "10") == 2
    assert "add --auto-fallback" in capsys.readouterr().err
