"""Quantize a model from Python with your own preprocessing, then compare it with the float model.

    python examples/quantize_from_python.py model.onnx images/ out.int8.onnx

Any iterable of feed dicts works as calibration data; here images are decoded and normalised by a
small function, the way a deployment pipeline would.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import onnxq


def feeds(folder: Path, size: int = 224):
    for path in sorted(folder.glob("*.jpg"))[:100]:
        img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        x = (np.asarray(img, np.float32) / 255.0 - 0.5) / 0.5
        yield {"input": x.transpose(2, 0, 1)[None]}


def main() -> None:
    model, folder, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    config = onnxq.QuantConfig(target="tensorrt", activations=onnxq.ActivationSpec(method="entropy"))
    # a function returning a fresh iterator can be read more than once (calibration + validation)
    result = onnxq.quantize(model, lambda: feeds(folder), config)
    result.save(out)
    print(f"quantized {len(result.report.quantized_nodes)} nodes; sample output cosine "
          f"{result.report.check.get('output_cosine', float('nan')):.4f}; wrote {out}")


if __name__ == "__main__":
    main()
