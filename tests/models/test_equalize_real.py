"""``--equalize`` end to end on YOLOX-Nano, the model it was made for (issue 12): the CLI exits 0, writes a
valid model, and the output stays near float on images it did not calibrate on.

Before the fix every real model failed here with exit 2 ("Failed to find existing initializer"): the
equalized graph kept the original depthwise weights as dead initializers, which onnxruntime drops and then
cannot take in memory. The tiny unit models never showed it: their weights are under 1 KB, which stay in
the serialized bytes. Skips without the shared model or data (``ONNXQ_DATA``, see test_real_models.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import DATA, MODELS, ort_session

from onnxq.analysis.metrics import sqnr_db
from onnxq.cli import main
from onnxq.collect.feeds import input_specs_from_model
from onnxq.collect.images import ImageSpec, from_images
from onnxq.graph.usage import unused_initializers
from onnxq.io import load_model

IMAGES = DATA / "coco128" / "images" / "train2017"
CALIBRATION = 16
# Output SQNR vs float on images 16..23, measured with onnxruntime CPU: 10.6 dB with --equalize, 6.7 dB
# without (same flags otherwise). The floor leaves a few dB for other builds and still tells the two apart.
MIN_SQNR_DB = 8.0


def _model() -> Path | None:
    for path in (DATA.parent / "models" / "yolox_nano.onnx", MODELS / "yolox_nano.onnx"):
        if path.exists():
            return path
    return None


@pytest.mark.slow
@pytest.mark.skipif(_model() is None or not IMAGES.is_dir(), reason="YOLOX-Nano or coco128 absent")
def test_yolox_nano_quantizes_with_equalize_near_float(tmp_path) -> None:
    model_path = _model()
    out = tmp_path / "yolox.int8.onnx"
    code = main(["quantize", str(model_path), "-o", str(out), "--calib-data", str(IMAGES),
                 "--image-size", "416", "416", "--resize", "letterbox", "--pad-position", "top-left",
                 "--pixel-scale", "1", "--bgr", "--max-samples", str(CALIBRATION),
                 "--method", "percentile", "--equalize", "-q"])
    assert code == 0
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved, full_check=True)
    assert unused_initializers(saved) == []
    # the depthwise inputs are equalized: a per-channel Mul ahead of their Q/DQ
    assert any(n.op_type == "Mul" and "_equalized" in n.output[0] for n in saved.graph.node)

    spec = ImageSpec(size=(416, 416), resize="letterbox", pad_position="top-left", scale=1.0,
                     channel_order="bgr")
    model = load_model(model_path)
    images = from_images(IMAGES, input_specs_from_model(model), spec)
    held_out = list(itertools.islice(iter(images), CALIBRATION, CALIBRATION + 8))
    float_session, quant_session = ort_session(model_path), ort_session(out)  # Q/DQ as exact fake quant
    want = np.concatenate([float_session.run(None, feed)[0] for feed in held_out])
    got = np.concatenate([quant_session.run(None, feed)[0] for feed in held_out])
    assert got.shape == want.shape and np.isfinite(got).all()
    assert sqnr_db(want, got) > MIN_SQNR_DB
