"""The collector: run the float model with onnxruntime over the data and stream statistics.

What it runs. One onnxruntime session of the float model with the planned activation tensors added
as graph outputs (:func:`onnxq.collect.augment.expose`); planned tensors that are graph inputs are read
from the feeds. Only the planned tensors are exposed, never every intermediate one. Every method
(min-max included) gets the tensors themselves and reduces them with numpy in
:func:`onnxq.collect.stats.observe`: numpy's min/max propagate NaN, onnxruntime's ReduceMin/ReduceMax
do not (measured: a NaN anywhere but the first element is silently ignored), and in-graph reductions
were also slower than exposing (66 vs 60 ms per EfficientNet-Lite0 image).

How it runs. Each pass over the data (:mod:`onnxq.collect.passes`) counts one batch in worker threads
while onnxruntime computes the next; the tensors are split over several passes only when two batches of
them would exceed the memory budget (:mod:`onnxq.collect.memory`). The statistics are the same, bit for
bit, for any number of workers, passes or automatic batch size.

Batching. Several feeds run as one batch when the model allows it and that is checked to change no
collected value (``onnxq.collect.coalesce``): per-run overheads of onnxruntime and numpy drop by ~25 %.

The graph. By default the session runs with all of onnxruntime's graph optimisations (its NCHWc
convolution kernels make EfficientNet-Lite0 ~2.7x faster). Exposed tensors keep their names but differ
from the unoptimised graph's by kernel rounding (measured on EfficientNet-Lite0: at most 1.4e-5
relative; over 100 images the entropy, percentile and mse ranges of all 50 tensors came out identical
and min-max ranges moved by at most 4e-7 relative): far below what a quantization step resolves.
``optimize=False`` gives the reference kernels' values bit for bit. Basic and extended optimisation
levels change no value but buy no speed either.

Signedness. A tensor gets signed histograms (``pos`` and ``neg``) when one of its specs in the plan is
asymmetric: asymmetric calibrators need both sides (:mod:`onnxq.calibrate.ranges`); symmetric ones read
their merge, the |x| histogram.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
from tqdm import tqdm

from onnxq.collect import coalesce, memory
from onnxq.collect.batching import batched
from onnxq.collect.feeds import DataSource, Feed, input_specs_from_model
from onnxq.collect.passes import Reducer, Reference, State, jobs_by_tensor, run_pass
from onnxq.collect.stats import TensorStats, new_stats
from onnxq.collect.validate import validated
from onnxq.config import BatchStatistic, QuantConfig
from onnxq.errors import CalibrationDataError
from onnxq.records import QuantPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collection:
    """What one collection produced: tensor statistics, the sample count, and the reducers' results."""

    stats: dict[str, TensorStats]
    samples: int
    reduced: dict[str, Any] = field(default_factory=dict)
    passes: int = 1  # passes over the data (more than one when the tensors exceed the memory budget)
    feeds_per_run: int = 1  # feeds joined into one onnxruntime run (automatic batching), after batch_size
    reference: Reference | None = None  # the model's outputs for the first feed, from the first pass

    def describe(self, batch_size: int | None = None) -> str:
        """How the data ran where the user asked for it (``--batch-size``) or should know it (several passes):
        e.g. ``"batches of 8 feeds, 2 passes over the data (memory budget)"``; "" otherwise (automatic batching
        changes no value, so it is not worth a word)."""
        parts = []
        if batch_size is not None and batch_size > 1:
            parts.append(f"batches of {batch_size} feeds")
        if self.passes > 1:
            parts.append(f"{self.passes} passes over the data (memory budget)")
        return ", ".join(parts)


def collect(
    model: onnx.ModelProto,
    plan: QuantPlan,
    source: DataSource,
    config: QuantConfig,
    *,
    progress: bool = False,
    histograms: bool | None = None,
    memory_mb: float | None = None,
    optimize: bool = True,
) -> tuple[dict[str, TensorStats], int]:
    """Statistics of every planned activation tensor, and the number of samples seen.

    ``histograms`` overrides whether histograms are kept (default: when the method needs them).
    ``memory_mb`` (default ``config.collect_memory_mb``) bounds the exposed activations held at once;
    more tensors than fit are collected in further passes over ``source``. ``optimize`` runs the
    calibration graph with onnxruntime's optimisations (default; values differ from the unoptimised
    graph by kernel rounding only, see the module docstring); False gives the reference kernels' values.
    """
    result = collect_all(model, plan, source, config, progress=progress, histograms=histograms,
                         memory_mb=memory_mb, optimize=optimize)
    return result.stats, result.samples


def collect_all(
    model: onnx.ModelProto,
    plan: QuantPlan,
    source: DataSource,
    config: QuantConfig,
    *,
    reducers: Sequence[Reducer] = (),
    progress: bool = False,
    histograms: bool | None = None,
    memory_mb: float | None = None,
    optimize: bool = True,
) -> Collection:
    """``collect``, plus the results of ``reducers`` over the same run of the model."""
    tensors = list(dict.fromkeys(s.tensor for s in plan.activations()))
    if not tensors and not reducers:
        return Collection({}, 0)
    budget = memory.memory_budget(config, memory_mb)
    hist = config.activations.needs_histogram if histograms is None else histograms
    asymmetric = {s.tensor for s in plan.activations() if not s.symmetric}
    num_bins = config.activations.num_bins
    empty = {t: new_stats(num_bins, histogram=hist, signed=t in asymmetric) for t in tensors}
    state = State(empty, dict.fromkeys((r.key for r in reducers), None))
    specs = input_specs_from_model(model)
    if config.batch_size is not None and config.batch_size > 1:
        source = validated(batched(source, config.batch_size, specs), specs)
    inputs = {s.name for s in specs}
    needed = list(dict.fromkeys([*tensors, *(r.tensor for r in reducers)]))
    from_feed = [t for t in needed if t in inputs]
    internal = [t for t in needed if t not in inputs]

    feeds = iter(source)  # peek at the first feed without consuming a one-shot source
    first = next(feeds, None)
    if first is None:
        raise CalibrationDataError(f"{source.description} produced no samples; give at least one")
    per_batch = budget / memory.IN_FLIGHT
    sizes = memory.measured(model, memory.tensor_bytes(model, needed, first), first, per_batch)
    passes = memory.split_passes(internal, sizes, per_batch)
    if len(passes) > 1:
        log.info("collecting %d tensors in %d passes to stay within the memory budget", len(internal), len(passes))
    limit = _auto_batch_limit(config, specs, sizes, budget, len(passes))
    samples, most, reference = 0, 1, None
    for k, group in enumerate(passes):
        data = itertools.chain([first], feeds) if k == 0 else _again(source, k)
        desc = "calibrating" if len(passes) == 1 else f"calibrating (pass {k + 1}/{len(passes)})"
        names = (from_feed if k == 0 else []) + group
        work = jobs_by_tensor(names, set(tensors), reducers)
        with tqdm(total=source.count, disable=not progress, unit="batch", desc=desc, leave=False) as bar:
            outputs = [o.name for o in model.graph.output] if k == 0 else []
            state, seen, limit, first_run = run_pass(model, group, work, sizes, data, state, optimize, bar, limit,
                                                     outputs)
        reference = first_run if k == 0 else reference
        most = max(most, limit)
        if k and seen != samples:
            raise CalibrationDataError(
                f"{source.description} gave {samples} samples in the first pass and {seen} in pass {k + 1}; "
                "a multi-pass collection needs a source that yields the same data each time "
                "(or a larger memory budget, --memory-mb, so that one pass suffices)"
            )
        samples = seen
    # a reduction with no value read a tensor of an If branch the data never took (an empty source was
    # refused above): nothing was measured for it, and placement leaves such a node in float
    reduced = {key: value for key, value in state.reduced.items() if value is not None}
    return Collection(state.stats, samples, reduced, len(passes), most, reference)


def _again(source: DataSource, k: int) -> Iterable[Feed]:
    try:
        return iter(source)
    except CalibrationDataError as exc:
        raise CalibrationDataError(
            f"pass {k + 1} of the collection needs the data again: {exc} (or raise the memory budget, "
            "--memory-mb, so that one pass suffices)"
        ) from None


def _auto_batch_limit(config: QuantConfig, specs, sizes: Mapping[str, float | None], budget: float,
                      passes: int) -> int:
    """Feeds per run when batching automatically: 1 (off) unless the model and budget allow more."""
    if config.batch_size is not None or config.activations.batch_statistic is not BatchStatistic.NONE \
            or passes != 1:
        return 1  # explicit batches are the user's; per-batch statistics depend on the batching
    if not coalesce.batch_dim_shared(specs):
        return 1
    per_feed = sum(memory.assumed_bytes(b) for b in sizes.values()) or 1.0
    return max(1, min(coalesce.MAX_SAMPLES, int(budget / memory.IN_FLIGHT // per_feed)))
