"""Top-1 agreement (%) of a classifier with its float model: a metric for ``--metric-script``.

The two-argument form: onnxq passes the float model's outputs and the quantized model's outputs (per
sample, the list of model outputs) and reads ``(float_score, quant_score)``. Agreement needs no labels, so
this works on any evaluation folder of any classifier whose first output is ``[batch, classes]`` logits.

    onnxq quantize model.onnx -o model.int8.onnx --calib-data calib/ --eval-data eval/ \\
        --auto-fallback --metric-script examples/metrics/efficientnet_agreement.py --max-metric-drop 1.5
"""

from __future__ import annotations

import numpy as np


def metric(outputs_float: list[list[np.ndarray]], outputs_quant: list[list[np.ndarray]]) -> tuple[float, float]:
    ref = np.concatenate([o[0] for o in outputs_float]).reshape(-1, outputs_float[0][0].shape[-1])
    got = np.concatenate([o[0] for o in outputs_quant]).reshape(ref.shape)
    return 100.0, 100.0 * float(np.mean(ref.argmax(1) == got.argmax(1)))
