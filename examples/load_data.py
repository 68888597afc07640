"""A calibration script for `onnxq quantize --calib-script examples/load_data.py` (Polygraphy's convention).

onnxq imports this file only because you named it, and calls load_data() once per pass over the data.
Each yielded dict maps input names to arrays that include the batch dimension.
"""

import numpy as np


def load_data():
    rng = np.random.default_rng(0)
    for _ in range(16):
        yield {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
