"""Every tensor of both models on a few feeds, for debugging one layer by hand (``onnxq compare --dump``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from onnxq import runtime
from onnxq.analysis.pairing import check_inputs, node_outputs
from onnxq.collect.augment import expose
from onnxq.collect.batching import take
from onnxq.collect.feeds import DataSource, input_specs_from_model
from onnxq.collect.validate import validated


def dump_tensors(
    float_model: onnx.ModelProto, quant_model: onnx.ModelProto, source: DataSource, limit: int = 1
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """For each of the first ``limit`` feeds: every node output of the float and of the quantized model
    (graph optimizations off, so each tensor exists by its name), for debugging one layer by hand."""
    check_inputs(float_model, quant_model)
    source = take(validated(source, input_specs_from_model(float_model)), limit)
    fs = runtime.make_session(expose(float_model, list(node_outputs(float_model))))
    qs = runtime.make_session(expose(quant_model, list(node_outputs(quant_model))))
    f_names, q_names = runtime.output_names(fs), runtime.output_names(qs)
    for feed in source:
        yield (dict(zip(f_names, runtime.run(fs, feed, f_names))),
               dict(zip(q_names, runtime.run(qs, feed, q_names))))
