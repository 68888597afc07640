"""Every tensor of both models on a few feeds, for debugging one layer by hand (``onnxq compare --dump``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from onnxq.analysis.pairing import check_inputs, every_node_output, fetcher, float_body_tensors, node_outputs
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
    fs, qs = fetcher(float_model, _tensors(float_model)), fetcher(quant_model, _tensors(quant_model))
    for feed in source:
        yield fs(feed), qs(feed)


def _tensors(model: onnx.ModelProto) -> list[str]:
    """The graph outputs, every node output of the main graph, and the float ones computed inside bodies
    (a routed body tensor must declare its type; its values cover every execution of its body, empty when
    its branch did not run)."""
    body = float_body_tensors(model)
    names = [o.name for o in model.graph.output] + list(node_outputs(model))
    return list(dict.fromkeys(names + [t for t in every_node_output(model) if t in body]))
