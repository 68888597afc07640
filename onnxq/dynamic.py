"""Dynamic quantization (``QuantConfig(mode="dynamic")``, ``onnxq quantize --mode dynamic``): no calibration.

load -> preprocess -> placement.dynamic.dynamic_plan (a KernelChoice per MatMul, Gemm, Conv and
recurrent node) -> rewrite.dynamic.apply_dynamic on the one graph -> export (keeping only the input's
shape annotations: graph.annotations) -> check. The report has a
Skip for each node left float (with its reason) and a TensorRecord for each weight quantized, whose
rule names the kernel.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import onnx

from onnxq.calibrate.solve import weight_qmax
from onnxq.check import check_model
from onnxq.config import QuantConfig
from onnxq.graph.annotations import keep_annotations
from onnxq.graph.query import GraphIndex, import_graph
from onnxq.placement.dynamic import dynamic_plan
from onnxq.records import QuantPlan, QuantReport, Skip, TensorRecord
from onnxq.records.kernels import KernelChoice, weights_text
from onnxq.rewrite.dynamic import apply_dynamic
from onnxq.rewrite.insert_qdq import export_model


def quantize_dynamic(model: str | os.PathLike | onnx.ModelProto, config: QuantConfig, data: Any = None):
    """Quantize ``model`` dynamically (``config.mode`` is dynamic). ``data`` (optional, what
    ``onnxq.quantize`` takes) is not calibrated on: its first feed runs in the final check and the float
    comparison of the report. Returns an ``onnxq.api.QuantResult``."""
    from onnxq.analysis.metrics import output_similarity
    from onnxq.api import QuantResult, _first_sample, _outputs, _prepare, _stamp, as_source, check_exclusions

    t = time.perf_counter()
    pre, notes, annotations = _prepare(model)  # (annotations: of the model as given)
    check_exclusions(pre, config)
    source = as_source(data, pre) if data is not None else None
    sample = _first_sample(source, pre) if source is not None else None
    qmax = int(weight_qmax(config))
    graph = import_graph(pre)
    index = GraphIndex.build(graph)
    choices = dynamic_plan(index, config, weights_text(config.weights.per_channel, qmax))
    weights = {c.node: _weight_records(index, c, qmax, config.weights.per_channel) for c in choices if c.quantized}
    apply_dynamic(graph, choices, config.weights, qmax)
    qmodel = export_model(graph, pre)
    # The shapes onnxq inferred for itself would steer onnxruntime's fusions (graph.annotations: into a
    # slower SkipLayerNormalization): the written model keeps only the annotations its input had.
    keep_annotations(qmodel, annotations)
    _stamp(qmodel, config)
    rewrite_s = time.perf_counter() - t
    t = time.perf_counter()
    checked = check_model(qmodel, sample)
    check = output_similarity(_outputs(pre, sample), checked.outputs) if sample is not None else {}
    skips = tuple(Skip(c.node, c.op_type, c.rule, c.reason) for c in choices if not c.quantized)
    qplan = QuantPlan(config.target.value, (), skips, tuple(c.node for c in choices if c.quantized))
    report = QuantReport(
        model=str(model) if not isinstance(model, onnx.ModelProto) else "<in-memory model>",
        target=config.target.value, method="dynamic (no calibration)", config=config.to_dict(),
        preprocess=tuple(notes), data=_data_text(source), samples=0,
        quantized_nodes=qplan.quantized_nodes, skipped=skips,
        tensors=tuple(r for rs in weights.values() for r in rs),
        timings={"rewrite": round(rewrite_s, 3), "check": round(time.perf_counter() - t, 3)},
        check=check, check_samples=1 if sample is not None else 0,
    )
    src = None if isinstance(model, onnx.ModelProto) else str(model)
    return QuantResult(qmodel, report, qplan, {}, {}, sample, src, checked.data)


def _weight_records(index: GraphIndex, choice: KernelChoice, qmax: int, per_channel: bool) -> tuple[TensorRecord, ...]:
    """The report rows of a quantized node's weights (read before the rewrite replaces them): the largest
    scale, and how many channels have one (per output column, per gate row and direction)."""
    node = next(n for n in index.graph.nodes if n.name == choice.node)
    rows = []
    for idx in ((1, 2) if choice.op_type == "LSTM" else (1,)):
        value = index.constant_value(node.inputs[idx])
        amax = float(np.abs(value).max()) if value.size else 0.0
        if choice.op_type == "LSTM":
            channels = value.shape[0] * value.shape[1] if per_channel else value.shape[0]
        else:
            n = value.shape[0] if node.attrs.get("transB", 0) else value.shape[1]
            channels = n if per_channel else 1
        rows.append(TensorRecord(tensor=node.inputs[idx].name, role="weight", dtype="int8",
                                 rule=f"{choice.rule}: {choice.kernel}", axis=None, scale=amax / qmax,
                                 channels=channels, lo=-amax, hi=amax))
    return tuple(rows)


def _data_text(source: Any) -> str:
    what = "none: activations are quantized at run time"
    return what if source is None else f"{source.description}, first feed for the check only ({what})"
