"""Issue 12, items 6 and 8: counts and labels in reports, file permissions, and statistics saved by
``quantize --save-stats`` serving any method later. Tiny models (helpers.RESIDUAL_NET and here), ``onnxq``
run in-process."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import onnx
import pytest
from helpers import residual_net, save_onnx, save_random_arrays

from onnxq.analysis.metrics import plausibly_class_scores
from onnxq.cli import main
from onnxq.collect.stats_file import load_stats
from onnxq.preprocess import preprocess
from onnxq.records import QuantReport
from onnxq.report.render import report_text
from onnxq.testing import model_from_text

EMBED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N,16] x) => (float[N,8] e, float[N,8] s) {
  h = Gemm <transB=1> (x, G, C)
  e = LpNormalization <axis=-1, p=2> (h)
  s = Gemm <transB=1> (x, G2, C2)
}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue12")
    save_onnx(residual_net(), root / "m.onnx")
    save_random_arrays(root / "calib", 6, (1, 3, 8, 8), seed=3)
    return root


def run(*argv) -> int:
    return main([str(a) for a in argv])


def data_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("data "))


# --------------------------------------------------------------------------- item 6: counts and labels


def test_samples_in_batched_feeds_are_counted_as_such(root, tmp_path, capsys):
    """--random 8 with a batch of 2 per feed: 16 samples in 8 feeds, not "8 random samples (16 samples)"."""
    assert run("quantize", root / "m.onnx", "-o", tmp_path / "q.onnx", "--random", "8", "--dim", "N=2",
               "--method", "minmax") == 0
    text = capsys.readouterr().out
    assert data_line(text).endswith("(16 samples in 8 feeds)")
    assert "ran 2 samples" in text  # the check ran the first feed: a batch of 2


def test_load_stats_reports_the_bias_correction_samples_not_zero(root, tmp_path, capsys):
    stats = tmp_path / "s.npz"
    assert run("calibrate", root / "m.onnx", "--calib-data", root / "calib", "-o", stats) == 0
    capsys.readouterr()
    assert run("quantize", root / "m.onnx", "-o", tmp_path / "q.onnx", "--load-stats", stats,
               "--calib-data", root / "calib") == 0
    line = data_line(capsys.readouterr().out)
    assert "for bias correction (statistics given)" in line and line.endswith("(6 samples)")
    assert run("quantize", root / "m.onnx", "-o", tmp_path / "q.onnx", "--load-stats", stats) == 0
    line = data_line(capsys.readouterr().out)
    assert line.split(None, 1)[1] == "precomputed statistics"  # no "(0 samples)"


def test_sensitivity_says_first_n_once(root, capsys):
    assert run("sensitivity", root / "m.onnx", "--random", "4", "--max-samples", "4", "--eval-samples", "4",
               "--workers", "1") == 0
    assert "eval data     4 random samples (uniform, seed 0) (4 samples)" in capsys.readouterr().out
    assert run("sensitivity", root / "m.onnx", "--calib-data", root / "calib", "--max-samples", "4",
               "--eval-samples", "2", "--workers", "1") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("eval data"))
    assert line.count("first") == 1 and "first 2 (2 samples)" in line


def test_batchnorm_fold_note_reads_as_a_sentence():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,8,8] x) => (float[1,4] y) {
      c = Conv (x, W)
      b = BatchNormalization (c, S, Bb, M, V)
      p = GlobalAveragePool (b)
      f = Flatten (p)
      g = Gemm <transB=1> (f, G)
      y = BatchNormalization (g, S2, B2, M2, V2)
    }
    """
    ones = lambda n: np.ones(n, np.float32)  # noqa: E731
    model = model_from_text(text, weights={"W": (4, 3, 3, 3), "S": ones(4), "Bb": ones(4), "M": ones(4),
                                           "V": ones(4), "G": (4, 4), "S2": ones(4), "B2": ones(4),
                                           "M2": ones(4), "V2": ones(4)})
    _, notes = preprocess(model)
    bn = [n for n in notes if "BatchNormalization" in n]
    assert bn == ["folded 2 BatchNormalization: 1 into Conv, 1 into Gemm"] or \
        bn == ["folded 2 BatchNormalization: 1 into Gemm, 1 into Conv"]


def test_check_line_says_one_sample_with_honest_precision():
    report = QuantReport(model="m", target="tensorrt", method="entropy", config={}, preprocess=(), data="d",
                         samples=64, quantized_nodes=(), skipped=(), tensors=(),
                         check={"output_cosine": 0.99999999, "output_sqnr_db": 154.83}, check_samples=1)
    line = next(x for x in report_text(report).splitlines() if x.startswith("check"))
    assert "ran 1 sample (a smoke test, not an accuracy measure" in line
    assert "cosine 1 - 1.0e-08" in line and "SQNR 154.8 dB" in line and "cosine 1," not in line


def test_demo_check_line_is_honest(tmp_path, capsys):
    assert run("demo", "-o", tmp_path / "d.onnx", "--calib-size", "4", "--eval-size", "4") == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("check"))
    assert "ran 1 sample" in line and "output_cosine 1," not in line


def test_fallback_layers_have_their_own_rule_and_the_json_holds_the_steps(root, tmp_path, capsys):
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    assert run("quantize", root / "m.onnx", "-o", tmp_path / "q.onnx", "--calib-data", root / "calib",
               "--auto-fallback", "--max-float-layers", "1", "--format", "json", "--report-json", report,
               "--report", page) == 0
    out = json.loads(capsys.readouterr().out)
    html = page.read_text()
    assert "kept in float by the fallback" in html and "user-exclude" not in html
    assert out == json.loads(report.read_text())
    fallback = [s for s in out["skipped"] if s["rule"] == "fallback"]
    assert len(fallback) == 1 and fallback[0]["reason"].startswith("kept in float by the fallback")
    assert not [s for s in out["skipped"] if s["rule"] == "user-exclude"]  # no --exclude-node was given
    assert [s["node"] for s in out["fallback"]["steps"]] == [fallback[0]["node"]]
    assert out["fallback"]["float_nodes"] == [fallback[0]["node"]]
    # the recorded config still reproduces the model with an --exclude-node pattern
    assert out["config"]["exclude_nodes"] == [f"^{fallback[0]['node']}$"]


def test_html_report_keeps_calibration_time_under_calibrate(root, tmp_path, capsys):
    assert run("quantize", root / "m.onnx", "-o", tmp_path / "q.onnx", "--calib-data", root / "calib",
               "--report", tmp_path / "r.html", "--format", "json") == 0
    out = json.loads(capsys.readouterr().out)
    assert "bias_correction" not in out["timings"] and out["samples"] == 6
    assert out["method"].startswith("auto: ") and out["choice"]["scores"]  # 6 feeds: scored in-sample
    html = (tmp_path / "r.html").read_text()
    assert "(6 samples)" in html and "ran 1 sample (a smoke test" in html and "output_cosine" not in html


def test_top1_only_for_plausible_class_scores(tmp_path, capsys):
    model = model_from_text(EMBED, weights={"G": (8, 16), "C": (8,), "G2": (8, 16), "C2": (8,)})
    path, quant = tmp_path / "e.onnx", tmp_path / "q.onnx"
    onnx.save(model, str(path))
    assert run("quantize", path, "-o", quant, "--random", "8", "--dim", "N=4") == 0
    capsys.readouterr()
    assert run("compare", path, quant, "--random", "4", "--dim", "N=4", "--format", "json") == 0
    outputs = {o["name"]: o for o in json.loads(capsys.readouterr().out)["outputs"]}
    assert outputs["e"]["top1"] is None  # unit-norm rows: an embedding
    assert outputs["s"]["top1"] is not None  # class scores
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10)).astype(np.float32)
    assert plausibly_class_scores(logits)
    assert not plausibly_class_scores(logits / np.linalg.norm(logits, axis=1, keepdims=True))
    assert not plausibly_class_scores(rng.standard_normal((4, 3, 10)))  # a sequence, not one row per sample
    confident = np.array([[0.9999, 0.0001]], np.float32)  # a softmax row: L2 norm 0.9999, still class scores
    assert plausibly_class_scores(confident)


# --------------------------------------------------------------------------- item 8: files


def test_every_written_file_honours_the_umask(root, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "q.onnx"
        assert run("quantize", root / "m.onnx", "-o", out, "--calib-data", root / "calib", "--report",
                   tmp_path / "r.html", "--report-json", tmp_path / "r.json", "--save-stats", tmp_path / "s.npz") == 0
        assert run("calibrate", root / "m.onnx", "--calib-data", root / "calib", "-o", tmp_path / "c.npz") == 0
        assert run("sensitivity", root / "m.onnx", "--calib-data", root / "calib", "--workers", "1", "--report",
                   tmp_path / "sens.html") == 0
        assert run("compare", root / "m.onnx", out, "--data", root / "calib", "--dump", tmp_path / "dump") == 0
    finally:
        os.umask(old)
    written = [out, tmp_path / "r.html", tmp_path / "r.json", tmp_path / "s.npz", tmp_path / "c.npz",
               tmp_path / "sens.html", tmp_path / "dump" / "float" / "00000.npz"]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {0o644}, modes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_stats_saved_by_quantize_with_minmax_serve_entropy_later(root, tmp_path, capsys):
    stats = tmp_path / "s.npz"
    assert run("quantize", root / "m.onnx", "-o", tmp_path / "a.onnx", "--calib-data", root / "calib",
               "--save-stats", stats) == 0
    loaded, meta = load_stats(stats)
    assert all(s.has_histogram for s in loaded.values()) and meta["samples"] == "6"
    for method in ("entropy", "mse", "percentile"):
        assert run("quantize", root / "m.onnx", "-o", tmp_path / f"{method}.onnx", "--load-stats", stats,
                   "--method", method) == 0
    err = capsys.readouterr().err
    assert "error" not in err


def test_save_stats_with_load_stats_is_refused(root, tmp_path, capsys):
    stats = tmp_path / "s.npz"
    assert run("calibrate", root / "m.onnx", "--calib-data", root / "calib", "-o", stats) == 0
    assert run("quantize", root / "m.onnx", "-o", tmp_path / "q.onnx", "--load-stats", stats,
               "--save-stats", tmp_path / "t.npz") == 2
    assert "drop one" in capsys.readouterr().err.strip().splitlines()[-1]
