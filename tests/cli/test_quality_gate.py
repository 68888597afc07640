"""``onnxq quantize --min-sqnr DB`` / ``--max-metric-drop X`` without ``--auto-fallback``: gates on the result."""

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


METRIC = '''
import numpy as np

def metric(outputs):
    """Minus the mean absolute output: the float model scores a known value, and int8 noise moves it."""
    return -float(np.mean([np.abs(np.asarray(o[0])).mean() for o in outputs]))
'''


def _metric_drop(conv_model, calib12) -> float:
    """What the gate measures, computed here: the metric on float and on the written model, all feeds."""
    import numpy as np

    from onnxq import runtime
    from onnxq.api import quantize
    from onnxq.collect import data as data_mod
    from onnxq.io import load_model

    model = load_model(conv_model)
    feeds = list(data_mod.from_dir(calib12, data_mod.input_specs_from_model(model)))
    q = quantize(model, feeds).model
    score = lambda m: -float(np.mean([np.abs(runtime.run(runtime.make_session(m), f)[0]).mean()  # noqa: E731
                                      for f in feeds]))
    return score(model) - score(q)


def test_max_metric_drop_gates_without_auto_fallback(conv_model, calib12, tmp_path, capsys):
    script = tmp_path / "metric.py"
    script.write_text(METRIC)
    drop = abs(_metric_drop(conv_model, calib12))
    assert drop > 0
    out = tmp_path / "q.onnx"
    assert _quantize(conv_model, calib12, out, "--metric-script", str(script), "--max-metric-drop",
                     f"{drop * 2:.9g}") == 0
    assert out.exists()
    out.unlink()
    capsys.readouterr()
    tight = _quantize(conv_model, calib12, out, "--metric-script", str(script), "--max-metric-drop", "0")
    err = capsys.readouterr().err.strip()
    if _metric_drop(conv_model, calib12) > 0:  # quantization lowered the score: the gate refuses
        assert tight == 1 and "more than --max-metric-drop 0: nothing written" in err and not out.exists()
    else:  # it raised it: no drop, the model is written
        assert tight == 0 and out.exists()


def test_max_metric_drop_needs_a_metric_script(conv_model, calib12, tmp_path, capsys):
    assert _quantize(conv_model, calib12, tmp_path / "q.onnx", "--max-metric-drop", "1") == 2
    assert "--max-metric-drop needs a metric" in capsys.readouterr().err


def test_max_float_layers_alone_caps_auto(conv_model, calib12, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert _quantize(conv_model, calib12, out, "--max-float-layers", "0") == 0 and out.exists()
    assert _quantize(conv_model, calib12, out, "--method", "minmax", "--max-float-layers", "1") == 2
    assert "add --auto-fallback" in capsys.readouterr().err


def test_metric_script_alone_scores_auto_candidates(conv_model, calib12, tmp_path, capsys):
    script = tmp_path / "metric.py"
    script.write_text(METRIC)
    out = tmp_path / "q.onnx"
    assert _quantize(conv_model, calib12, out, "--metric-script", str(script), "--format", "json") == 0
    choice = json.loads(capsys.readouterr().out)["choice"]
    assert choice["by_metric"] and out.exists()
    assert _quantize(conv_model, calib12, out, "--metric-script", str(script)) == 0
    assert "your metric" in capsys.readouterr().out
    assert _quantize(conv_model, calib12, out, "--method", "mse", "--metric-script", str(script)) == 2
    assert "add --auto-fallback" in capsys.readouterr().err
