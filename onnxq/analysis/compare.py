"""Compare a float model with its quantized version on data: per-output and per-layer error.

Both models run on the same feeds with onnxruntime. Per output: SQNR (dB), cosine, max abs error and,
for outputs that are plausibly class scores, top-1 agreement; optionally a user metric of both models' outputs and
the quantization loss ``|quant - float| / |float| x 100`` (the form of the "loss" many quantization
tools print). Everything is accumulated as running sums (:class:`onnxq.analysis.metrics.ErrorSums`), so
memory does not grow with the number of samples; only a user metric, which needs all outputs at once,
keeps them.

Which outputs get top-1 agreement (:func:`plausibly_class_scores`): a float [batch, classes] (or
[batch, 1, classes]) output with at least 2 classes whose rows on the first feed are not all of unit L2
norm. The argmax of a row is a decision only for class scores (logits or probabilities); a unit-norm row
is an embedding, compared by cosine (sentence-transformers models L2-normalise theirs, MiniLM included),
and the agreement of its largest coordinate measures nothing. Embeddings left unnormalised cannot be
told from logits by value: use ``--min-cosine`` for them and ignore the column.

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

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from onnxq import runtime
from onnxq.analysis.metrics import ErrorSums, accumulate, looks_like_logits
from onnxq.collect.batching import take
from onnxq.collect.feeds import DataSource, Feed, input_specs_from_model
from onnxq.collect.validate import validated
from onnxq.errors import ConfigError, UnsupportedModelError
from onnxq.records.compare import CompareReport, LayerComparison, MetricLoss, OutputComparison

log = logging.getLogger(__name__)

FLOAT_TYPES = frozenset({"tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)"})

# metric(outputs_float, outputs_quant) -> (float_score, quant_score); each argument holds, per sample,
# the list of that model's outputs in the float model's output order.
MetricFn = Callable[[list[list[np.ndarray]], list[list[np.ndarray]]], tuple[float, float]]


UNIT_NORM_TOL = 1e-3  # |‖row‖₂ - 1| below this on every row: an L2-normalised embedding


def plausibly_class_scores(value: np.ndarray) -> bool:
    """True when ``value`` (one feed's output) is plausibly class scores: see the module docstring."""
    value = np.asarray(value)
    if value.dtype.kind != "f" or not looks_like_logits(value.shape) or value.size == 0:
        return False
    rows = value.reshape(-1, value.shape[-1]).astype(np.float64)
    # a confident softmax row ([0.9999, 0.0001]) has an L2 norm near 1 too: rows on the probability simplex
    # (non-negative, summing to 1) are class scores whatever their norm
    if np.all(rows >= 0) and np.all(np.abs(rows.sum(axis=1) - 1.0) < UNIT_NORM_TOL):
        return True
    norms = np.linalg.norm(rows, axis=1)
    return not bool(np.all(np.abs(norms - 1.0) < UNIT_NORM_TOL))


@dataclass(frozen=True)
class Tolerances:
    """Gates for CI: None disables a check. ``min_top1_pct`` and ``max_loss_pct`` are percentages."""

    min_sqnr_db: float | None = None
    min_cosine: float | None = None
    min_top1_pct: float | None = None
    max_loss_pct: float | None = None


def loss_pct(float_score: float, quant_score: float) -> float:
    """|quant - float| / |float| x 100; 0 when both are 0, inf when only the float score is 0."""
    if quant_score == float_score:
        return 0.0
    if float_score == 0.0:
        return float("inf")
    return abs(quant_score - float_score) / abs(float_score) * 100.0


def check_tolerances(report: CompareReport, tol: Tolerances) -> tuple[str, ...]:
    """One line per violated tolerance (empty when all hold); a gate that cannot apply is a ConfigError."""
    out = []
    for o in report.outputs:
        if tol.min_sqnr_db is not None and not o.sqnr_db >= tol.min_sqnr_db:
            out.append(f"output '{o.name}': SQNR {o.sqnr_db:.2f} dB below the minimum {tol.min_sqnr_db:g} dB")
        if tol.min_cosine is not None and not o.cosine >= tol.min_cosine:
            out.append(f"output '{o.name}': cosine {o.cosine:.6f} below the minimum {tol.min_cosine:g}")
    if tol.min_top1_pct is not None:
        logits = [o for o in report.outputs if o.top1 is not None]
        if not logits:
            raise ConfigError("a minimum top-1 agreement is set but no output is plausibly logits or class "
                              "scores ([batch, classes] with rows not of unit norm: unit-norm rows are "
                              "embeddings); drop the top-1 tolerance for this model (use --min-cosine)")
        for o in logits:
            if not o.top1 >= tol.min_top1_pct:
                out.append(f"output '{o.name}': top-1 agreement {o.top1:.2f} % below the minimum "
                           f"{tol.min_top1_pct:g} %")
    if tol.max_loss_pct is not None:
        if report.metric is None:
            raise ConfigError("a maximum quantization loss is set but no metric was given; "
                              "pass a metric script (--metric-script) or drop the loss tolerance")
        if not report.metric.loss_pct <= tol.max_loss_pct:
            out.append(f"metric: quantization loss {report.metric.loss_pct:.3f} % above the maximum "
                       f"{tol.max_loss_pct:g} %")
    return tuple(out)


# ----------------------------------------------------------------------------------------- graph queries

def _node_outputs(model: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    """Tensor name -> (topological index, producer) for every node output of the main graph."""
    return {o: (k, n) for k, n in enumerate(model.graph.node) for o in n.output if o}


def _expose(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``names`` as extra outputs, declared without a type so that onnxruntime
    infers it (integer and float tensors alike)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present:
            out.graph.output.add().name = name
            present.add(name)
    return out


def _qdq_of(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor -> output of the DequantizeLinear fed by its QuantizeLinear (a Q/DQ pair on that tensor)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = {}
    for q in model.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in pairs:
            continue
        dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
        if dq is not None:
            pairs[q.input[0]] = dq.output[0]
    return pairs


def _float_outputs(session) -> set[str]:
    return {o.name for o in session.get_outputs() if o.type in FLOAT_TYPES}


@dataclass(frozen=True)
class _Plan:
    """What to fetch from each session and how the fetched values pair up."""

    outputs: tuple[str, ...]
    layers: tuple[str, ...] = ()  # shared float tensors (quantized graph inputs included)
    dq: dict[str, str] = field(default_factory=dict)  # tensor -> its DQ output in the quantized model
    weights: dict[str, str] = field(default_factory=dict)  # initializer -> its DQ output (quantized model)
    inputs: frozenset[str] = frozenset()  # graph inputs: read from the feed, not fetched

    def float_fetch(self) -> list[str]:
        return [t for t in dict.fromkeys(self.outputs + self.layers) if t not in self.inputs]

    def quant_fetch(self) -> list[str]:
        extra = [self.dq[t] for t in self.layers if t in self.dq] + list(self.weights.values())
        return [t for t in dict.fromkeys(self.outputs + self.layers + tuple(extra)) if t not in self.inputs]


def _shared_outputs(fm: onnx.ModelProto, qm: onnx.ModelProto) -> tuple[str, ...]:
    q_names = {o.name for o in qm.graph.output}
    shared = tuple(o.name for o in fm.graph.output if o.name in q_names)
    if not shared:
        raise UnsupportedModelError(
            "the two models share no output name; compare a float model with a model quantized from it "
            "(quantizers keep the output names)")
    missing = [o.name for o in fm.graph.output if o.name not in q_names]
    if missing:
        log.warning("outputs %s of the float model are not in the quantized model; not compared", missing)
    return shared


def _check_inputs(fm: onnx.ModelProto, qm: onnx.ModelProto) -> None:
    f_in = {s.name for s in input_specs_from_model(fm)}
    q_in = {s.name for s in input_specs_from_model(qm)}
    if f_in != q_in:
        raise UnsupportedModelError(
            f"the models take different inputs ({sorted(f_in)} vs {sorted(q_in)}); compare a float model "
            "with a model quantized from it")


def _sessions(fm: onnx.ModelProto, qm: onnx.ModelProto, per_layer: bool, optimize: bool):
    """(float session, exact quantized session, optimized quantized session or None, plan)."""
    outputs = _shared_outputs(fm, qm)
    if not per_layer:
        fs, qs = runtime.make_session(fm), runtime.make_session(qm)
        return fs, qs, runtime.make_session(qm, optimize=True) if optimize else None, _Plan(outputs)
    f_nodes, q_nodes = _node_outputs(fm), _node_outputs(qm)
    candidates = [t for t in q_nodes if t in f_nodes]
    pairs = _qdq_of(qm)
    inits = {t.name for t in qm.graph.initializer}
    weights = {t: dq for t, dq in pairs.items() if t in inits}
    inputs = [s.name for s in input_specs_from_model(fm) if s.name in pairs and s.dtype.kind == "f"]
    dq = {t: pairs[t] for t in inputs + candidates if t in pairs}
    fs = runtime.make_session(_expose(fm, candidates))
    qs = runtime.make_session(_expose(qm, candidates + list(dq.values()) + list(weights.values())))
    floats = _float_outputs(fs) & _float_outputs(qs)
    layers = tuple(inputs) + tuple(t for t in candidates if t in floats and t not in outputs)
    plan = _Plan(outputs, layers, {t: d for t, d in dq.items() if t in layers}, weights, frozenset(inputs))
    return fs, qs, runtime.make_session(qm, optimize=True) if optimize else None, plan


# ----------------------------------------------------------------------------------------------- compare

def _batch(feed: Feed) -> int:
    for value in feed.values():
        return int(value.shape[0]) if np.ndim(value) else 1
    return 1


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

    plan: _Plan
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
    _check_inputs(float_model, quant_model)
    source = validated(source, input_specs_from_model(float_model))
    fs, qs, opt, plan = _sessions(float_model, quant_model, per_layer, optimize)
    f_fetch, q_fetch = plan.float_fetch(), plan.quant_fetch()
    acc = _Running(plan, keep=metric is not None)
    with tqdm(total=source.count, disable=not progress, unit="sample", desc="comparing", leave=False) as bar:
        for feed in source:
            fv = {**feed, **dict(zip(f_fetch, runtime.run(fs, feed, f_fetch)))}
            qv = {**feed, **dict(zip(q_fetch, runtime.run(qs, feed, q_fetch)))}
            if opt is not None:
                qv.update(zip(plan.outputs, runtime.run(opt, feed, plan.outputs)))
            if acc.samples == 0:
                acc.first(quant_model, fv, qv)
            acc.add(fv, qv, _batch(feed))
            bar.update(1)
    return CompareReport(
        float_model="<float model>", quant_model="<quantized model>", data=source.description,
        samples=acc.samples, optimized=opt is not None, outputs=acc.output_records(),
        layers=_layers(quant_model, plan, acc.layers, acc.pre),
        metric=_metric(metric, acc.kept_f, acc.kept_q) if metric is not None else None,
    )


def _weight_sums(quant_model: onnx.ModelProto, plan: _Plan,
                 qv: dict[str, np.ndarray]) -> dict[str, ErrorSums]:
    """Weight error once: the float initializer against its dequantized value (data does not change it)."""
    inits = {t.name: t for t in quant_model.graph.initializer if t.name in plan.weights}
    out: dict[str, ErrorSums] = {}
    for name, dq in plan.weights.items():
        _add(out, name, numpy_helper.to_array(inits[name]), qv[dq])
    return out


def _layers(qm: onnx.ModelProto, plan: _Plan, sums: dict[str, ErrorSums], pre: dict[str, ErrorSums]):
    q_nodes = _node_outputs(qm)
    dq_consumer = {i: (k, n) for k, n in enumerate(qm.graph.node) for i in n.input}
    rows = []
    for t in plan.layers:
        if t not in sums:
            continue  # shapes differed: not the same tensor
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


# -------------------------------------------------------------------------------------------------- dump

def dump_tensors(
    float_model: onnx.ModelProto, quant_model: onnx.ModelProto, source: DataSource, limit: int = 1
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """For each of the first ``limit`` feeds: every node output of the float and of the quantized model
    (graph optimizations off, so each tensor exists by its name), for debugging one layer by hand."""
    _check_inputs(float_model, quant_model)
    source = take(validated(source, input_specs_from_model(float_model)), limit)
    fs = runtime.make_session(_expose(float_model, list(_node_outputs(float_model))))
    qs = runtime.make_session(_expose(quant_model, list(_node_outputs(quant_model))))
    f_names, q_names = runtime.output_names(fs), runtime.output_names(qs)
    for feed in source:
        yield (dict(zip(f_names, runtime.run(fs, feed, f_names))),
               dict(zip(q_names, runtime.run(qs, feed, q_names))))
