"""Compare a float model with its quantized version on data: per-output and per-layer error.

Both models run on the same feeds with onnxruntime. Per output: SQNR (dB), cosine, max abs error and,
for outputs that are plausibly class scores, top-1 agreement; optionally a user metric of both models' outputs and
the quantization loss ``|quant - float| / |float| x 100`` (the form of the "loss" many quantization
tools print). Everything is accumulated as running sums (:class:`onnxq.analysis.metrics.ErrorSums`), so
memory does not grow with the number of samples; only a user metric, which needs all outputs at once,
keeps them.

Which outputs get top-1 agreement: those that are plausibly class scores on the first feed
(:func:`onnxq.analysis.metrics.plausibly_class_scores`; embeddings are not).

Per layer (``per_layer=True``): the quantized model keeps the float model's tensor names (Q/DQ outputs
get new ones), so every float tensor both models produce under one name is exposed as an extra output
and compared. Both run with onnxruntime graph optimizations DISABLED: fused kernels would hide the
tensors and compute something else than the exact fake quantization a TensorRT engine follows.
For a tensor that carries a Q/DQ pair in the quantized model, the value compared is the dequantized one
(what its consumers read); ``pre_qdq_sqnr_db`` is the SQNR just before that pair, so the difference is
the noise the tensor's own scale adds (a large drop points at a bad range). Weights quantized as
float -> Q -> DQ are compared with the quantized model's own float initializer once (their error does
not depend on data). Layers are sorted worst first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from onnxq import runtime
from onnxq.analysis.metrics import ErrorSums, accumulate, loss_pct, plausibly_class_scores
from onnxq.analysis.pairing import FetchPlan, check_inputs, every_node_output, initializers, sessions
from onnxq.collect.feeds import DataSource, batch_size, input_specs_from_model
from onnxq.collect.validate import validated
from onnxq.errors import UnsupportedModelError
from onnxq.graph.usage import all_nodes
from onnxq.records.compare import CompareReport, LayerComparison, MetricLoss, OutputComparison

# metric(outputs_float, outputs_quant) -> (float_score, quant_score); each argument holds, per sample,
# the list of that model's outputs in the float model's output order.
MetricFn = Callable[[list[list[np.ndarray]], list[list[np.ndarray]]], tuple[float, float]]


def _add(sums: dict[str, ErrorSums], key: str, ref: np.ndarray, x: np.ndarray, top1: bool = False) -> bool:
    """Accumulate one pair; False (and nothing added) when the shapes differ."""
    try:
        sums[key] = accumulate(sums.get(key, ErrorSums()), ref, x, top1=top1)
    except ValueError:
        return False
    return True


@dataclass
class _Running:
    """Sums of one comparison pass; lives inside :func:`compare` only."""

    plan: FetchPlan
    keep: bool
    outputs: dict[str, ErrorSums] = field(default_factory=dict)
    layers: dict[str, ErrorSums] = field(default_factory=dict)
    pre: dict[str, ErrorSums] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    logits: dict[str, bool] = field(default_factory=dict)
    kept_f: list[list[np.ndarray]] = field(default_factory=list)
    kept_q: list[list[np.ndarray]] = field(default_factory=list)
    samples: int = 0

    def first(self, quant_model: onnx.ModelProto, fv: dict, qv: dict) -> None:
        self.shapes = {n: tuple(np.shape(fv[n])) for n in self.plan.outputs}
        self.logits = {n: plausibly_class_scores(fv[n]) for n in self.plan.outputs}
        self.layers.update(_weight_sums(quant_model, self.plan, qv))

    def add(self, fv: dict, qv: dict, batch: int) -> None:
        plan = self.plan
        for name in plan.outputs:
            if not _add(self.outputs, name, fv[name], qv[name], self.logits[name]):
                raise UnsupportedModelError(
                    f"output '{name}' has shape {np.shape(fv[name])} in the float model but "
                    f"{np.shape(qv[name])} in the quantized one; compare a model with its own quantized "
                    "version")
        for t in plan.layers:
            if t in plan.dq:
                _add(self.pre, t, fv[t], qv[t])
            _add(self.layers, t, fv[t], qv[plan.dq.get(t, t)])
        if self.keep:
            self.kept_f.append([fv[n] for n in plan.outputs])
            self.kept_q.append([qv[n] for n in plan.outputs])
        self.samples += batch

    def output_records(self) -> tuple[OutputComparison, ...]:
        return tuple(
            OutputComparison(n, self.shapes[n], s.sqnr_db, s.cosine, s.max_abs,
                             None if s.top1 is None else 100.0 * s.top1)
            for n, s in ((n, self.outputs[n]) for n in self.plan.outputs)
        )


def compare(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    source: DataSource,
    *,
    per_layer: bool = False,
    optimize: bool = False,
    metric: MetricFn | None = None,
    progress: bool = False,
) -> CompareReport:
    """Run both models on every feed of ``source`` and report their differences (module docstring).

    ``optimize=True`` takes the quantized model's outputs from a session with onnxruntime's graph
    optimizations on (how an ort-cpu model is deployed); per-layer values always come from exact runs.
    ``metric`` receives all outputs of both models at the end (the one case that keeps them in memory).
    The report names the models "<float model>" / "<quantized model>": callers replace them with paths.
    """
    check_inputs(float_model, quant_model)
    source = validated(source, input_specs_from_model(float_model))
    fs, qs, opt, plan = sessions(float_model, quant_model, per_layer, optimize)
    f_fetch, q_fetch = plan.float_fetch(), plan.quant_fetch()
    acc = _Running(plan, keep=metric is not None)
    with tqdm(total=source.count, disable=not progress, unit="sample", desc="comparing", leave=False) as bar:
        for feed in source:
            fv = {**feed, **fs(feed, f_fetch)}
            qv = {**feed, **qs(feed, q_fetch)}
            if opt is not None:
                qv.update(zip(plan.outputs, runtime.run(opt, feed, plan.outputs)))
            if acc.samples == 0:
                acc.first(quant_model, fv, qv)
            acc.add(fv, qv, batch_size(feed))
            bar.update(1)
    return CompareReport(
        float_model="<float model>", quant_model="<quantized model>", data=source.description,
        samples=acc.samples, optimized=opt is not None, outputs=acc.output_records(),
        layers=_layers(quant_model, plan, acc.layers, acc.pre),
        metric=_metric(metric, acc.kept_f, acc.kept_q) if metric is not None else None,
    )


def _weight_sums(quant_model: onnx.ModelProto, plan: FetchPlan,
                 qv: dict[str, np.ndarray]) -> dict[str, ErrorSums]:
    """Weight error once: the float initializer against its dequantized value (data does not change it)."""
    inits = initializers(quant_model)
    out: dict[str, ErrorSums] = {}
    for name, dq in plan.weights.items():
        _add(out, name, numpy_helper.to_array(inits[name]), qv[dq])
    return out


def _layers(qm: onnx.ModelProto, plan: FetchPlan, sums: dict[str, ErrorSums], pre: dict[str, ErrorSums]):
    q_nodes = every_node_output(qm)
    dq_consumer = {i: (k, n) for k, n in enumerate(all_nodes(qm.graph)) for i in n.input}
    rows = []
    for t in plan.layers:
        if t not in sums or not sums[t].elements:
            continue  # shapes differed (not the same tensor), or its If branch never ran
        # the quantized graph's node: its name is what --exclude-node matches (BN folding, for one, makes
        # a Conv produce the tensor a BatchNormalization produced in the float model)
        name, op, position = ("", "input", -1) if t in plan.inputs else (
            q_nodes[t][1].name, q_nodes[t][1].op_type, q_nodes[t][0])
        role = "activation" if t in plan.dq else "float"
        p = pre[t].sqnr_db if t in pre else None
        s = sums[t]
        rows.append(LayerComparison(t, name, op, role, s.sqnr_db, s.cosine, s.max_abs, p, position))
    for w, dq in plan.weights.items():
        if w in sums:
            k, consumer = dq_consumer.get(dq, (q_nodes[dq][0], q_nodes[dq][1]))
            s = sums[w]
            rows.append(LayerComparison(w, consumer.name, consumer.op_type, "weight", s.sqnr_db, s.cosine,
                                        s.max_abs, None, k))
    return tuple(sorted(rows, key=lambda r: (r.sqnr_db, r.position)))


def _metric(metric: MetricFn, kept_f, kept_q) -> MetricLoss:
    f_score, q_score = (float(v) for v in metric(kept_f, kept_q))
    return MetricLoss(f_score, q_score, loss_pct(f_score, q_score))
