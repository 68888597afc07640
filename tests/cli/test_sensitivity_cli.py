"""onnxq sensitivity and onnxq quantize --auto-fallback / --report, run in-process."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from helpers import residual_net, save_onnx, save_random_arrays

from onnxq.cli import main
from onnxq.testing import dq_inputs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sens")
    save_onnx(residual_net(batch=1), root / "f.onnx")
    rng = np.random.default_rng(3)
    for split, n in (("calib", 6), ("eval", 4)):
        save_random_arrays(root / split, n, (1, 3, 8, 8), seed=rng)
    (root / "metric.py").write_text(
        "import numpy as np\n"
        "def metric(outputs):\n"
        "    return -float(np.mean([np.mean(o[0] ** 2) for o in outputs]))\n")
    return root


def _base(root):
    return [str(root / "f.onnx"), "--calib-data", str(root / "calib"), "--eval-data", str(root / "eval")]


def test_sensitivity_json_ranks_every_quantized_node(setup, capsys):
    assert main(["sensitivity", *_base(setup), "--format", "json", "--workers", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {l["node"] for l in out["layers"]} == {"Conv_0", "Conv_1", "Add_0", "Gemm_0"}
    assert out["samples"] == 4 and out["evaluations"] == 9 and out["measure"] == "sqnr_db"
    gains = [l["gain"] for l in out["layers"]]
    assert gains == sorted(gains, reverse=True)


def test_sensitivity_text_and_markdown_tables_respect_top(setup, capsys):
    assert main(["sensitivity", *_base(setup), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "LOO gain (dB)" in text and "... 2 more (--top 0 shows all)" in text
    assert main(["sensitivity", *_base(setup), "--format", "md", "--top", "0", "--mode", "one"]) == 0
    md = capsys.readouterr().out
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 4 and "| # | layer | op |" in md


def test_sensitivity_with_a_metric_script(setup, capsys):
    assert main(["sensitivity", *_base(setup), "--format", "json", "--metric-script", str(setup / "metric.py")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measure"] == "metric" and out["float_metric"] < 0
    assert all(l["only"]["metric"] is not None for l in out["layers"])


def test_sensitivity_bad_inputs_exit_2_with_one_line(setup, tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    assert main(["sensitivity", *_base(setup), "--metric-script", str(bad)]) == 2
    assert "defines no metric() function" in capsys.readouterr().err
    assert main(["sensitivity", *_base(setup), "--top", "-1"]) == 2
    raising = tmp_path / "raising.py"
    raising.write_text("def metric(outputs):\n    raise ValueError('boom')\n")
    assert main(["sensitivity", *_base(setup), "--metric-script", str(raising)]) == 2
    err = capsys.readouterr().err
    assert "metric() in 'raising.py' failed: ValueError: boom" in err and "Traceback" not in err


def test_quantize_auto_fallback_leaves_the_top_layer_in_float(setup, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", *_base(setup), "-o", str(out), "--auto-fallback", "--max-float-layers", "1"]) == 0
    text = capsys.readouterr().out
    m = re.search(r"^\s+1\. (\S+) \((\w+)\) bought ([-+.\d]+) dB", text, re.M)
    assert m, text
    node = m.group(1)
    model = onnx.load(out)
    assert not any(dq_inputs(model)[node])
    config = json.loads(next(p.value for p in model.metadata_props if p.key == "onnxq.config"))
    assert config["exclude_nodes"] == [f"^{re.escape(node)}$"]
    assert "written model, exact" in text


def test_quantize_fallback_to_a_sqnr_target_and_html_report(setup, tmp_path, capsys):
    out, page = tmp_path / "q.onnx", tmp_path / "r.html"
    args = ["quantize", *_base(setup), "-o", str(out), "--auto-fallback", "--min-sqnr", "1000",
            "--max-float-layers", "2", "--fallback-select", "sqnr", "--report", str(page)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "TARGET NOT MET" in text and text.count(" bought ") == 2
    html = page.read_text()
    assert "Automatic fallback" in html and "target not met" in html and "<script" not in html


def test_fallback_flags_need_auto_fallback_and_a_metric(setup, tmp_path, capsys):
    out = str(tmp_path / "q.onnx")
    # --max-float-layers alone caps auto's fallback (tests/cli/test_quality_gate.py); with an explicit method
    # it is a stopping rule that needs --auto-fallback
    assert main(["quantize", *_base(setup), "-o", out, "--method", "mse", "--max-float-layers", "1"]) == 2
    assert "add --auto-fallback" in capsys.readouterr().err
    # --min-sqnr alone is auto's held-out gate (tests/cli/test_quality_gate.py); with an explicit method it
    # is a stopping rule that needs the fallback
    assert main(["quantize", *_base(setup), "-o", out, "--method", "mse", "--min-sqnr", "30"]) == 2
    assert "add --auto-fallback" in capsys.readouterr().err
    assert main(["quantize", *_base(setup), "-o", out, "--auto-fallback", "--max-metric-drop", "1"]) == 2
    assert "--metric-script" in capsys.readouterr().err
    assert main(["quantize", *_base(setup), "-o", out, "--auto-fallback"]) == 2
    assert "stopping rule" in capsys.readouterr().err


def test_quantize_report_without_fallback_has_histograms_and_layers(setup, tmp_path):
    page = tmp_path / "r.html"
    assert main(["-q", "quantize", *_base(setup), "-o", str(tmp_path / "q.onnx"), "--report", str(page)]) == 0
    html = page.read_text()
    assert "Activation histograms" in html and "Per-layer SQNR" in html and "Automatic fallback" not in html
    assert html.count('<div class=card>') == 3  # x, r (shared by Conv_1 and Add), f


def test_sensitivity_html_report(setup, tmp_path):
    page = tmp_path / "s.html"
    assert main(["-q", "sensitivity", *_base(setup), "--report", str(page), "--method", "entropy"]) == 0
    html = page.read_text()
    assert "<h2>Sensitivity</h2>" in html and "Activation histograms" in html and "<script" not in html
    assert html.count("leave-one-out gain (dB):") == 4  # one bar per quantized node
