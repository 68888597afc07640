"""onnxq compare, run in-process: exit codes, text and json reports, tolerances, metric script, dump."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import ort_session, pooled_net, random_feeds, ref_sqnr_db, save_arrays

from onnxq import api
from onnxq.cli import main
from onnxq.collect import data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    fm = pooled_net(batch=1)
    feeds = random_feeds((1, 3, 8, 8), 5, seed=2)
    save_arrays(root / "data", [feed["x"] for feed in feeds])
    onnx.save(fm, root / "f.onnx")
    api.quantize(fm, data.from_iterable(feeds)).save(root / "q.onnx")
    return root, feeds


def _cmd(root, *extra):
    return ["compare", str(root / "f.onnx"), str(root / "q.onnx"), "--data", str(root / "data"), *extra]


def _outputs(path, feeds):
    s = ort_session(path)
    return np.concatenate([s.run(None, f)[0] for f in feeds]).astype(np.float64)


def test_text_report_exit_0(setup, capsys):
    root, _ = setup
    assert main(_cmd(root, "--per-layer", "--top", "3")) == 0
    out = capsys.readouterr().out
    assert "SQNR dB" in out and "per-layer SQNR, worst first (3 of" in out
    assert "tolerances none given" in out and "tolerances hold" not in out  # nothing was checked
    assert main(_cmd(root, "--min-sqnr", "1")) == 0
    assert "ok         all given tolerances hold" in capsys.readouterr().out


def test_json_report_matches_numpy(setup, capsys):
    root, feeds = setup
    assert main(_cmd(root, "--format", "json", "--per-layer")) == 0
    report = json.loads(capsys.readouterr().out)
    f, q = _outputs(root / "f.onnx", feeds), _outputs(root / "q.onnx", feeds)
    sqnr = ref_sqnr_db([f], [q])
    (out,) = report["outputs"]
    assert out["sqnr_db"] == pytest.approx(sqnr, rel=1e-6) and report["samples"] == 5 and report["passed"]
    assert out["top1"] == pytest.approx(100 * np.mean(f.argmax(1) == q.argmax(1)))
    sqnrs = [layer["sqnr_db"] for layer in report["layers"]]
    assert sqnrs == sorted(sqnrs) and len(sqnrs) >= 5


def test_tolerance_violation_exit_1(setup, capsys):
    root, _ = setup
    assert main(_cmd(root, "--min-sqnr", "199", "--min-cosine", "0.5")) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "below the minimum 199 dB" in out and "cosine" not in out.split("FAILED")[1]
    assert main(_cmd(root, "--min-sqnr", "5", "--min-top1", "0")) == 0
    assert main(["-q", *_cmd(root, "--min-sqnr", "199")]) == 1
    assert "tolerance violated" in capsys.readouterr().err


def test_metric_script_and_max_loss(setup, tmp_path, capsys):
    root, feeds = setup
    script = tmp_path / "m.py"
    script.write_text(
        "import numpy as np\n"
        "def metric(fl, ql):\n"
        "    return float(np.mean([o[0].sum() for o in fl])), float(np.mean([o[0].sum() for o in ql]))\n")
    assert main(_cmd(root, "--metric-script", str(script), "--format", "json")) == 0
    m = json.loads(capsys.readouterr().out)["metric"]
    f, q = _outputs(root / "f.onnx", feeds), _outputs(root / "q.onnx", feeds)
    fs, qs = f.sum(1).mean(), q.sum(1).mean()
    assert m["float_score"] == pytest.approx(fs, rel=1e-5)
    # the loss is a difference of two near-equal sums: allow the rounding of the two runs (1e-4 %)
    assert m["loss_pct"] == pytest.approx(abs(qs - fs) / abs(fs) * 100, rel=1e-3, abs=1e-4)
    assert main(_cmd(root, "--metric-script", str(script), "--max-loss", "1000")) == 0
    assert main(_cmd(root, "--metric-script", str(script), "--max-loss", "0")) == 1


def test_bad_input_exit_2(setup, tmp_path, capsys):
    root, _ = setup
    assert main(_cmd(root, "--max-loss", "1")) == 2
    assert "--metric-script" in capsys.readouterr().err
    nope = str(tmp_path / "nope")
    assert main(["compare", str(root / "f.onnx"), str(root / "q.onnx"), "--data", nope]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", str(root / "f.onnx"), str(tmp_path / "missing.onnx"), "--random", "2"]) == 2
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    assert main(_cmd(root, "--metric-script", str(bad))) == 2
    assert "defines no metric()" in capsys.readouterr().err
    assert main(["compare", str(root / "f.onnx"), str(root / "q.onnx")]) == 2  # no data source
    assert "--data DIR" in capsys.readouterr().err
    assert main(["compare", str(root / "f.onnx"), str(root / "q.onnx"), "--calib-data", "x"]) == 2


def test_data_script_and_random(setup, tmp_path, capsys):
    root, _ = setup
    script = tmp_path / "feeds.py"
    script.write_text("import numpy as np\ndef load_data():\n"
                      "    for k in range(3):\n"
                      "        yield {'x': np.full((1, 3, 8, 8), 0.1 * k, np.float32)}\n")
    base = ["compare", str(root / "f.onnx"), str(root / "q.onnx"), "--format", "json"]
    assert main([*base, "--data-script", str(script)]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3
    assert main([*base, "--random", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 4


def test_dump_writes_npz_of_both_models(setup, tmp_path):
    root, feeds = setup
    out = tmp_path / "dump"
    assert main(["-q", *_cmd(root, "--dump", str(out), "--dump-samples", "2")]) == 0
    assert sorted(p.name for p in (out / "float").iterdir()) == ["00000.npz", "00001.npz"]
    with np.load(out / "quant" / "00001.npz", allow_pickle=False) as z:
        assert {"c", "x_q", "x_dq", "y"} <= set(z.files)
    with np.load(out / "float" / "00000.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["y"], _outputs(root / "f.onnx", feeds[:1]), rtol=1e-6)
