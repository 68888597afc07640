"""Every flag combination behind a README figure, end to end on the smallest real model that exercises it.

The README's results come from `benchmarks/` on full data; these runs make sure the same commands still
work and land near float on held-out data, every time the suite runs (CI included). The model is the
embedded PP-OCR direction classifier (onnxq/assets, always present: MobileNetV3 with depthwise convs,
residual Adds and a Gemm, so every flag has something to act on), on ``ocr-synth/cls`` from
``ONNXQ_DATA`` (skipped without it): 32 calibration crops, scored on the first 32 evaluation crops.
YOLOX-Nano's ``--equalize`` figure has its own test (test_equalize_real.py).

Floors are the output SQNR measured on this data minus about 3 dB (measured 2026-12-03: minmax 20.7,
entropy 10.7, mse 25.2, percentile 28.7, ort-cpu entropy 9.7 (optimised), percentile + equalize +
fallback 24.9).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DATA, REPO

from onnxq import demo
from onnxq.cli import main

CLS = DATA / "ocr-synth" / "cls"
IMAGES = ["--image-size", "48", "192", "--resize", "stretch", "--mean", "0.5", "--std", "0.5", "--bgr"]
CALIB = ["--calib-data", str(CLS / "calib"), *IMAGES, "--max-samples", "32"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CLS.is_dir(), reason="ONNXQ_DATA/ocr-synth/cls absent")]


def held_out_sqnr(quant: Path, capsys, optimize: bool = False) -> float:
    capsys.readouterr()
    args = ["compare", str(demo.model_path()), str(quant), "--data", str(CLS / "eval"), *IMAGES,
            "--max-samples", "32", "--format", "json"] + (["--optimize"] if optimize else [])
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)["outputs"][0]["sqnr_db"]


@pytest.mark.parametrize("method,floor", [("minmax", 17.0), ("entropy", 7.5), ("mse", 22.0), ("percentile", 25.5)])
def test_each_method_of_the_results_table(method, floor, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(demo.model_path()), "-o", str(out), *CALIB, "--method", method, "-q"]) == 0
    assert held_out_sqnr(out, capsys) > floor


def test_ort_cpu_column(tmp_path, capsys):
    """The results table's ort-cpu column: `--target ort-cpu --method entropy`, run as deployed."""
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(demo.model_path()), "-o", str(out), *CALIB, "--target", "ort-cpu",
                 "--method", "entropy", "-q"]) == 0
    assert held_out_sqnr(out, capsys, optimize=True) > 6.5


def test_equalize_percentile_sqnr_fallback(tmp_path, capsys):
    """The accuracy-recovery figure's flags: --equalize --method percentile --auto-fallback
    --fallback-select sqnr, searching on calibration crops, verified on held-out ones."""
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(demo.model_path()), "-o", str(out), *CALIB, "--method", "percentile",
                 "--equalize", "--auto-fallback", "--fallback-select", "sqnr", "--max-float-layers", "2",
                 "--eval-data", str(CLS / "calib"), "--eval-samples", "16", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    fallback = report["fallback"]
    assert fallback["rule"]["select"] == "sqnr" and len(fallback["float_nodes"]) == 2
    assert fallback["verified"]["sqnr_db"] > fallback["start"]["sqnr_db"]  # the fallback bought something
    assert any("equalized" in note for note in report["preprocess"])
    assert held_out_sqnr(out, capsys) > 21.5


def test_metric_fallback_with_the_example_metric(tmp_path, capsys, monkeypatch):
    """--auto-fallback with a metric script (examples/metrics/ppocr_cls_accuracy.py) and a metric target."""
    monkeypatch.setenv("ONNXQ_METRIC_SPLIT", "calib")  # search on calibration crops, as the README says
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(demo.model_path()), "-o", str(out), *CALIB, "--method", "percentile",
                 "--auto-fallback", "--metric-script", str(REPO / "examples" / "metrics" / "ppocr_cls_accuracy.py"),
                 "--max-metric-drop", "1", "--max-float-layers", "2", "--eval-data", str(CLS / "calib"),
                 "--eval-samples", "32", "--format", "json"]) == 0
    fallback = json.loads(capsys.readouterr().out)["fallback"]
    assert fallback["measure"] == "metric" and fallback["float_metric"] > 80.0


def test_sensitivity_ranks_every_quantized_layer(tmp_path, capsys):
    """The README's sensitivity figure (one at a time and leave one out for every layer), JSON with all."""
    quant = tmp_path / "q.onnx"
    assert main(["quantize", str(demo.model_path()), "-o", str(quant), *CALIB, "--format", "json"]) == 0
    quantized = json.loads(capsys.readouterr().out)["quantized_nodes"]
    assert main(["sensitivity", str(demo.model_path()), *CALIB, "--eval-data", str(CLS / "eval"),
                 "--eval-samples", "8", "--format", "json", "--top", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    layers = {layer["node"] for layer in report["layers"]}
    assert layers == set(quantized)  # JSON holds every layer whatever --top
    assert all(layer["only"] is not None and layer["all_but"] is not None for layer in report["layers"])
