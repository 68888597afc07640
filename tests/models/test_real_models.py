"""Real models: TensorRT-correct QDQ structure on YOLOX-Nano (opset 11) and EfficientNet-Lite0.

YOLOX-Nano comes with the shared data (`$ONNXQ_DATA/../models`); EfficientNet-Lite0 is built by
`models/efficientnet_lite0.py` into `$ONNXQ_MODELS` (default models/.cache). Tests skip without them.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import DATA, MODELS, ort_run

from onnxq.api import quantize
from onnxq.collect.batching import take
from onnxq.collect.feeds import input_specs_from_model
from onnxq.collect.images import ImageSpec, from_images
from onnxq.io import load_model
from onnxq.testing import dq_inputs


def check_tensorrt_structure(model: onnx.ModelProto) -> None:
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    flags = dq_inputs(model)
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs
    for node in convs:
        assert flags[node.name][:2] == [True, True], f"{node.name} lacks DequantizeLinear on an input"
        if len(node.input) > 2 and node.input[2]:
            assert not flags[node.name][2], f"{node.name}: bias must stay float"
        wdq = producers[node.input[1]]
        axis = next((a.i for a in wdq.attribute if a.name == "axis"), 1)
        scale = inits[wdq.input[1]]
        # Conv weights [Cout, ...] and Gemm with transB=1 (both models) are per channel on axis 0
        assert scale.ndim == 1 and axis == 0, f"{node.name}: weight scales not per channel on axis 0"
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            assert not np.any(inits[node.input[2]]), f"{node.name}: non-zero zero point"
            assert inits[node.input[2]].dtype == np.int8
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13


@pytest.mark.slow  # a real model quantized end to end
@pytest.mark.skipif(not (DATA.parent / "models" / "yolox_nano.onnx").exists(), reason="shared YOLOX-Nano absent")
def test_yolox_nano_opset11_gives_valid_per_channel_qdq_model(tmp_path):
    model_path = DATA.parent / "models" / "yolox_nano.onnx"
    before = model_path.read_bytes()
    model = load_model(model_path)
    spec = ImageSpec(resize="letterbox", pad_position="top-left", pad_value=114, scale=1.0, channel_order="bgr")
    source = take(from_images(DATA / "coco128" / "images" / "train2017", input_specs_from_model(model), spec), 4)
    result = quantize(model, source)
    out = result.save(tmp_path / "yolox.int8.onnx")
    saved = onnx.load(str(out))
    onnx.checker.check_model(saved, full_check=True)
    check_tensorrt_structure(saved)
    feed = next(iter(source))
    y = ort_run(out, feed)[0]
    assert y.shape == (1, 3549, 85) and np.isfinite(y).all()
    assert model_path.read_bytes() == before


@pytest.mark.slow  # a real model quantized end to end
@pytest.mark.skipif(not (MODELS / "efficientnet_lite0.onnx").exists(), reason="EfficientNet-Lite0 not built")
def test_efficientnet_lite0_structure_and_similarity(tmp_path):
    model = load_model(MODELS / "efficientnet_lite0.onnx")
    spec = ImageSpec(short_side=256, interpolation="bicubic", scale=1.0, mean=127.0, std=128.0)
    source = take(from_images(DATA / "imagenet-sample" / "calib", input_specs_from_model(model), spec), 8)
    result = quantize(model, source)
    check_tensorrt_structure(result.model)
    assert result.report.check["output_cosine"] > 0.95
