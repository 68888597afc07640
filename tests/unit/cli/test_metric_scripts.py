"""The example metric scripts (examples/metrics/): loadable by ``--metric-script``, scoring against the labels
of the split ``ONNXQ_METRIC_SPLIT`` names. Checked with outputs built from the labels themselves (a perfect
classifier scores 100, its inverse 0), so no model runs. Skipped without the real data (``ONNXQ_DATA``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DATA, REPO

from onnxq.cli.scripts import load_metric_script
from onnxq.errors import ConfigError

CLS = DATA / "ocr-synth" / "cls"


def _labels(split: str, n: int) -> np.ndarray:
    labels = json.loads((CLS / f"{split}_labels.json").read_text())
    return np.array([int(labels[k]) for k in sorted(labels)][:n])


@pytest.mark.skipif(not (CLS / "calib_labels.json").is_file(), reason="ocr-synth not found (set ONNXQ_DATA)")
@pytest.mark.parametrize("split", ["eval", "calib"])
def test_cls_accuracy_scores_against_the_chosen_split(split, monkeypatch):
    monkeypatch.setenv("ONNXQ_DATA", str(DATA))
    monkeypatch.setenv("ONNXQ_METRIC_SPLIT", split)
    metric = load_metric_script(REPO / "examples" / "metrics" / "ppocr_cls_accuracy.py")
    labels = _labels(split, 40)
    perfect = [[np.eye(2, dtype=np.float32)[[y]]] for y in labels]
    inverse = [[np.eye(2, dtype=np.float32)[[1 - y]]] for y in labels]
    assert metric(perfect) == pytest.approx(100.0) and metric(inverse) == pytest.approx(0.0)
    other = _labels("calib" if split == "eval" else "eval", 40)
    if not np.array_equal(other, labels):  # the other split's labels would not score 100
        assert metric([[np.eye(2, dtype=np.float32)[[y]]] for y in other]) < 100.0


def test_metric_script_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_metric_script(tmp_path / "missing.py")
    script = tmp_path / "m.py"
    script.write_text("def metric(outputs):\n    raise KeyError('boom')\n")
    with pytest.raises(ConfigError, match="metric\\(\\) in 'm.py' failed"):
        load_metric_script(script)([[np.zeros(1)]])
