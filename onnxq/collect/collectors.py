"""The collector: run the float model with onnxruntime over the data and stream statistics.

What it runs. One onnxruntime session of the float model with the planned activation tensors added
as graph outputs (:func:`onnxq.collect.augment.expose`); planned tensors that are graph inputs are read
from the feeds. Only the planned tensors are exposed, never every intermediate one. Every method
(min-max included) gets the tensors themselves and reduces them with numpy in
:func:`onnxq.collect.stats.observe`: numpy's min/max propagate NaN, onnxruntime's ReduceMin/ReduceMax
do not (measured: a NaN anywhere but the first element is silently ignored), and in-graph reductions
were also slower than exposing (66 vs 60 ms per EfficientNet-Lite0 image).

Where the time goes, and the overlap. For EfficientNet-Lite0 (50 planned tensors, 6.7 M activation
elements per image) the CPU time per image is ~11 ms of onnxruntime (optimised graph, four images per
run), ~10 ms of histogram counting with the compiled kernel (~18 ms with numpy alone) and ~5 ms of
bias-correction means, all memory-bound. onnxruntime releases the GIL while it runs, and the counting
kernel, numpy's ufunc loops and BLAS release it too, so batch ``k`` is counted in worker threads while
the main thread runs batch ``k + 1``: the wall time is about the total CPU time over the cores, not the
sum of the stages. The tensors are shared out between the workers by bytes for the first batch, then by
each tensor's measured time, and batch ``k + 1`` is handed out only when batch ``k`` is counted, so
every tensor sees its batches in order: the statistics are the same as a sequential loop's, bit for
bit, for any number of workers and any sharing. onnxruntime
gets every core (unless ``ONNXQ_THREADS`` says otherwise) with its idle threads sleeping rather than
spinning, so the counting workers (``min(4, cores)``) take the cores whenever it waits; BLAS is held to
one thread meanwhile (its own threads would spin against onnxruntime's).

Batching. Several feeds run as one batch when the model allows it and that is checked to change no
collected value (``onnxq.collect.coalesce``): per-run overheads of onnxruntime and numpy drop by ~25 %.

The graph. By default the session runs with all of onnxruntime's graph optimisations (its NCHWc
convolution kernels make EfficientNet-Lite0 ~2.7x faster). Exposed tensors keep their names but differ
from the unoptimised graph's by kernel rounding (measured on EfficientNet-Lite0: at most 1.4e-5
relative; over 100 images the entropy, percentile and mse ranges of all 50 tensors came out identical
and min-max ranges moved by at most 4e-7 relative): far below what a quantization step resolves.
``optimize=False`` gives the reference kernels' values bit for bit. Basic and extended optimisation
levels change no value but buy no speed either.

Other reductions. ``collect_all`` also runs caller-given ``Reducer``s (a per-batch reduction of one
tensor and an in-order merge, e.g. the input means bias correction needs) in the same workers, on the
same exposed values: one run of the model serves both.

Memory. O(model + two batches of exposed tensors + histograms), whatever the number of samples: each
batch is reduced to statistics and dropped. When two batches of the exposed tensors would exceed
``memory_mb``, the tensors are split over several passes over the data, each with its own session;
the statistics are identical to one pass (each tensor is observed once per batch, in order).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from onnxq import runtime
from onnxq.collect import augment, coalesce
from onnxq.collect.batching import batched
from onnxq.collect.feeds import DataSource, input_specs_from_model
from onnxq.collect.stats import TensorStats, new_stats, observe
from onnxq.collect.validate import validated
from onnxq.config import BatchStatistic, QuantConfig, Target
from onnxq.cores import usable_cores
from onnxq.errors import CalibrationDataError, ConfigError
from onnxq.records import QuantPlan

log = logging.getLogger(__name__)

UNKNOWN_TENSOR_MB = 16.0  # assumed size of a tensor whose shape inference left unresolved dims
IN_FLIGHT = 2  # batches of exposed tensors alive at once: one being counted, one being computed

Feed = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Reducer:
    """A streaming reduction of one tensor: ``merge(acc, reduce(batch))`` over the batches, in order.

    ``acc`` is None before the first batch. ``key`` names the result in ``Collection.reduced``.
    """

    key: str
    tensor: str
    reduce: Callable[[np.ndarray], Any]
    merge: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Collection:
    """What one collection produced: tensor statistics, the sample count, and the reducers' results."""

    stats: dict[str, TensorStats]
    samples: int
    reduced: dict[str, Any] = field(default_factory=dict)
    passes: int = 1  # passes over the data (more than one when the tensors exceed the memory budget)
    feeds_per_run: int = 1  # feeds joined into one onnxruntime run (automatic batching), after batch_size

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
    budget = _memory_budget(config, memory_mb)
    hist = config.activations.needs_histogram if histograms is None else histograms
    signed = hist and config.target is not Target.TENSORRT
    empty = new_stats(config.activations.num_bins, histogram=hist, signed=signed)
    state = _State({t: empty for t in tensors}, dict.fromkeys((r.key for r in reducers), None))
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
    sizes = measured(model, tensor_bytes(model, needed, first), first, budget / IN_FLIGHT)
    passes = split_passes(internal, sizes, budget / IN_FLIGHT)
    if len(passes) > 1:
        log.info("collecting %d tensors in %d passes to stay within the memory budget", len(internal), len(passes))
    limit = _auto_batch_limit(config, specs, sizes, budget, len(passes))
    samples, most = 0, 1
    for k, group in enumerate(passes):
        data = itertools.chain([first], feeds) if k == 0 else _again(source, k)
        desc = "calibrating" if len(passes) == 1 else f"calibrating (pass {k + 1}/{len(passes)})"
        names = (from_feed if k == 0 else []) + group
        jobs = _jobs(names, set(tensors), reducers)
        with tqdm(total=source.count, disable=not progress, unit="batch", desc=desc, leave=False) as bar:
            state, seen, limit = _run_pass(model, group, jobs, sizes, data, state, optimize, bar, limit)
        most = max(most, limit)
        if k and seen != samples:
            raise CalibrationDataError(
                f"{source.description} gave {samples} samples in the first pass and {seen} in pass {k + 1}; "
                "a multi-pass collection needs a source that yields the same data each time "
                "(or a larger memory budget, --memory-mb, so that one pass suffices)"
            )
        samples = seen
    missing = [key for key, value in state.reduced.items() if value is None]
    if missing:
        raise CalibrationDataError(f"the data produced no samples for {missing[0]!r}; give at least one")
    return Collection(state.stats, samples, state.reduced, len(passes), most)


@dataclass(frozen=True)
class _State:
    stats: dict[str, TensorStats]
    reduced: dict[str, Any]


@dataclass(frozen=True)
class _Job:
    """One unit of a worker's share: the statistics of ``tensor`` (reducer None) or one reducer."""

    tensor: str
    reducer: Reducer | None = None


def _jobs(names: Sequence[str], planned: set[str], reducers: Sequence[Reducer]) -> dict[str, list[_Job]]:
    """Per exposed tensor, the jobs reading it (its statistics if planned, then its reducers in order)."""
    jobs: dict[str, list[_Job]] = {n: ([_Job(n)] if n in planned else []) for n in names}
    for r in reducers:
        if r.tensor in jobs:
            jobs[r.tensor].append(_Job(r.tensor, r))
    return jobs


def _memory_budget(config: QuantConfig, memory_mb: float | None) -> float:
    value = config.collect_memory_mb if memory_mb is None else memory_mb
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"the collection memory budget must be a positive number of MB, got {value!r}")
    return float(value) * 2**20


def _again(source: DataSource, k: int) -> Iterable[Feed]:
    try:
        return iter(source)
    except CalibrationDataError as exc:
        raise CalibrationDataError(
            f"pass {k + 1} of the collection needs the data again: {exc} (or raise the memory budget, "
            "--memory-mb, so that one pass suffices)"
        ) from None


def _run_pass(
    model: onnx.ModelProto,
    group: list[str],
    jobs: Mapping[str, list[_Job]],
    sizes: Mapping[str, float | None],
    data: Iterable[Feed],
    state: _State,
    optimize: bool,
    bar: tqdm,
    limit: int = 1,
) -> tuple[_State, int, int]:
    """Run ``group`` exposed over ``data``; count batch k in workers (one per share) while batch k+1 runs.

    ``jobs`` maps each tensor to read (exposed, or from the feed) to its jobs. Batch k+1 is submitted
    only once batch k is done: every tensor and reducer sees its batches in order, whatever the number of
    workers and however the tensors are shared out. The first batch is shared by bytes; later ones by
    each tensor's measured time in the batch before (a tensor with reducers costs more than its bytes
    say: shared by bytes, one EfficientNet-Lite0 worker had twice the other's work). Up to ``limit``
    feeds run as one batch once the first ones are shown to give the same values that way
    (``onnxq.collect.coalesce``); returns the state, the samples seen and the limit kept.
    """
    session = None
    if group:
        exposed = augment.expose(model, group)
        session = runtime.make_session(exposed, optimize=optimize, threads=_ort_threads(), spinning=False)
    position = {name: k for k, name in enumerate(group)}
    names, workers = list(jobs), _count_workers()
    weights: Mapping[str, float | None] = sizes
    samples = 0
    pending: list[Future] = []
    # The workers already fill the cores onnxruntime leaves: BLAS threads of their own (the reducers'
    # matmuls) would only spin against onnxruntime (measured: +1.1 s on 100 EfficientNet-Lite0 images).
    with threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnxq-count") as pool:
        try:
            items, limit = _batches(session, group, data, limit)
            for feed, n, outputs in items:
                if outputs is None:
                    outputs = runtime.run(session, feed, group) if session is not None else []
                state, costs = _gather(state, pending)
                if costs:  # every tensor has jobs, so every one has a time: no mixing of seconds and bytes
                    weights = {name: costs.get(name, 0.0) for name in names}
                values = {name: outputs[k] for name, k in position.items()}
                pending = []
                for share in partition(names, weights, workers):
                    work = [j for name in share for j in jobs[name]]
                    inputs = [values[j.tensor] if j.tensor in values else feed[j.tensor] for j in work]
                    pending.append(pool.submit(_run_jobs, state, work, inputs))
                samples += batch_size(feed)
                bar.update(n)
            state, _ = _gather(state, pending)
        finally:
            for future in pending:
                future.cancel()
    return state, samples, limit


_Item = tuple[Feed, int, "list[np.ndarray] | None"]  # feed, source feeds in it, outputs if already run


def _batches(session, group: list[str], data: Iterable[Feed], limit: int) -> tuple[Iterable[_Item], int]:
    """The runs of a pass: single feeds, or up to ``limit`` joined once the first group checks out.

    The check runs the first feeds one by one (their outputs are kept and counted, nothing is run
    twice but the one batched run) and as one batch; any difference keeps the whole pass unbatched.
    """
    data = iter(data)
    if limit <= 1 or session is None:
        return ((feed, 1, None) for feed in data), 1
    head = list(itertools.islice(data, limit))
    singles = [runtime.run(session, feed, group) for feed in head]
    ok = len(head) > 1 and all(coalesce.joinable(head[0], f) for f in head[1:]) and coalesce.same_when_batched(
        lambda feed: session.run(group, dict(feed)), head, singles)
    first = [(feed, 1, out) for feed, out in zip(head, singles, strict=True)]
    if not ok:
        log.debug("calibrating one feed per run: batching the first feeds changed the collected values")
        return itertools.chain(first, ((feed, 1, None) for feed in data)), 1
    return itertools.chain(first, ((feed, n, None) for feed, n in coalesce.coalesce(data, limit))), limit


def _auto_batch_limit(config: QuantConfig, specs, sizes: Mapping[str, float | None], budget: float,
                      passes: int) -> int:
    """Feeds per run when batching automatically: 1 (off) unless the model and budget allow more."""
    if config.batch_size is not None or config.activations.batch_statistic is not BatchStatistic.NONE \
            or passes != 1:
        return 1  # explicit batches are the user's; per-batch statistics depend on the batching
    if not coalesce.batch_dim_shared(specs):
        return 1
    per_feed = sum(UNKNOWN_TENSOR_MB * 2**20 if b is None else b for b in sizes.values()) or 1.0
    return max(1, min(coalesce.MAX_SAMPLES, int(budget / IN_FLIGHT // per_feed)))


def _gather(state: _State, pending: list[Future]) -> tuple[_State, dict[str, float]]:
    """``state`` updated with the results of the workers' batch (waits for every one), and the seconds
    each tensor's jobs took."""
    results = [future.result() for future in pending]
    if not results:
        return state, {}
    stats = {**state.stats, **{k: v for r, _ in results for k, v in r.stats.items()}}
    reduced = {**state.reduced, **{k: v for r, _ in results for k, v in r.reduced.items()}}
    return _State(stats, reduced), {k: v for _, costs in results for k, v in costs.items()}


def _run_jobs(
    state: _State, jobs: Sequence[_Job], values: Sequence[np.ndarray]
) -> tuple[_State, dict[str, float]]:
    """The updated statistics and reductions of one worker's jobs after one batch, and the seconds each
    tensor's jobs took."""
    stats: dict[str, TensorStats] = {}
    reduced: dict[str, Any] = {}
    costs: dict[str, float] = {}
    for job, value in zip(jobs, values, strict=True):
        start = time.perf_counter()
        try:
            if job.reducer is None:
                stats[job.tensor] = observe(state.stats[job.tensor], value)
            else:
                r = job.reducer
                reduced[r.key] = r.merge(state.reduced[r.key], r.reduce(value))
        except CalibrationDataError as exc:
            raise CalibrationDataError(f"tensor {job.tensor!r}: {exc}") from None
        costs[job.tensor] = costs.get(job.tensor, 0.0) + time.perf_counter() - start
    return _State(stats, reduced), costs


def partition(names: Sequence[str], sizes: Mapping[str, float | None], workers: int) -> list[list[str]]:
    """Split ``names`` into at most ``workers`` shares of about equal weight (bytes, or measured seconds;
    largest first, to the lightest).

    Deterministic: ties go to the lowest share, and each share keeps plan order.
    """
    load = [0.0] * max(1, min(workers, len(names)))
    owner: dict[str, int] = {}
    weight = {n: UNKNOWN_TENSOR_MB * 2**20 if sizes.get(n) is None else float(sizes[n]) for n in names}
    for name in sorted(names, key=lambda n: -weight[n]):
        k = load.index(min(load))
        owner[name] = k
        load[k] += weight[name]
    shares = [[n for n in names if owner[n] == k] for k in range(len(load))]
    return [share for share in shares if share]


def _count_workers() -> int:
    """Counting threads: the usable cores, at most 4 (numpy releases the GIL in the counting loops)."""
    return min(4, usable_cores())


def _ort_threads() -> int | None:
    """Threads for onnxruntime: every usable core (None: honour ONNXQ_THREADS).

    Its threads do not spin while idle (``spinning=False``), so the counting workers get the cores
    whenever onnxruntime waits. Measured on EfficientNet-Lite0, 100 images, 2 cores: collection in 1.8 s
    against 2.1 s with one onnxruntime thread (the model's run was the critical path, the counting
    waited for it); two spinning threads were slower than one.
    """
    if runtime.env_threads():
        return None
    return usable_cores()


def batch_size(feed: Feed) -> int:
    """Leading dimension of the first input of ``feed`` (1 for a scalar input)."""
    for value in feed.values():
        arr = np.asarray(value)
        return int(arr.shape[0]) if arr.ndim else 1
    return 1


# ---------------------------------------------------------------------------------------------------
# Memory plan


def tensor_bytes(model: onnx.ModelProto, tensors: Sequence[str], feed: Feed) -> dict[str, float | None]:
    """Bytes of each tensor for one batch like ``feed`` (None when its shape is not fully known).

    Shapes come from the model's inferred ``value_info``; a symbolic dimension is resolved when a graph
    input has the same ``dim_param`` (the batch dimension, typically), from that input's shape in ``feed``.
    """
    known: dict[str, int] = {}
    for vi in model.graph.input:
        arr = feed.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if arr is None or np.ndim(arr) != len(dims):
            continue
        for d, size in zip(dims, np.shape(arr)):
            if d.dim_param:
                known.setdefault(d.dim_param, int(size))
    graph = model.graph
    infos = {vi.name: vi for vi in itertools.chain(graph.input, graph.value_info, graph.output)}
    out: dict[str, float | None] = {}
    for name in tensors:
        vi = infos.get(name)
        out[name] = _bytes(vi.type.tensor_type, known) if vi is not None else None
    return out


def measured(
    model: onnx.ModelProto, sizes: Mapping[str, float | None], feed: Feed, budget_bytes: float
) -> dict[str, float | None]:
    """``sizes`` with the unknown ones (None) measured by running ``feed``, a group at a time.

    Shape inference often loses the batch and sequence dims of a transformer's inner tensors
    (``['unk__2', 'unk__13', 'unk__3', 32]``); counted at ``UNKNOWN_TENSOR_MB`` each, MiniLM's 48 small
    tensors looked like 768 MB and were collected in two passes, one sample per run. The groups are the
    passes those guesses would give, so the probe stays within the budget the guesses do; each costs one
    session (graph optimisations off: quick to build) and one run of ``feed``. Sizes depend on the
    feed's shape (a longer sequence, a larger batch): these are the first feed's.
    """
    unknown = [name for name, size in sizes.items() if size is None]
    out = dict(sizes)
    for group in split_passes(unknown, sizes, budget_bytes) if unknown else []:
        session = runtime.make_session(augment.expose(model, group), threads=_ort_threads(), spinning=False)
        values = runtime.run(session, feed, group)
        out.update({name: float(np.asarray(v).nbytes) for name, v in zip(group, values, strict=True)})
    if unknown:
        log.debug("measured the sizes of %d tensors that shape inference left open", len(unknown))
    return out


def _bytes(ttype: onnx.TypeProto.Tensor, known: Mapping[str, int]) -> float | None:
    if not ttype.HasField("shape") or not ttype.elem_type:
        return None
    size = 1
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            size *= d.dim_value
        elif d.dim_param in known:
            size *= known[d.dim_param]
        else:
            return None
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)).itemsize
    return float(size * itemsize)


def split_passes(
    tensors: Sequence[str], sizes: Mapping[str, float | None], budget_bytes: float
) -> list[list[str]]:
    """Greedy split, in plan order, into passes whose exposed bytes per batch stay within the budget.

    A tensor of unknown size counts as ``UNKNOWN_TENSOR_MB``; one larger than the budget gets a pass of
    its own (it cannot be split further). Always at least one pass, possibly empty.
    """
    passes: list[list[str]] = [[]]
    used = 0.0
    for name in tensors:
        size = sizes.get(name)
        size = UNKNOWN_TENSOR_MB * 2**20 if size is None else size
        if passes[-1] and used + size > budget_bytes:
            passes.append([])
            used = 0.0
        if size > budget_bytes:
            log.warning("tensor %r alone needs %.3g MB per batch, more than the collection budget (--memory-mb "
                        "%.3g) allows; it is collected in a pass of its own", name, IN_FLIGHT * size / 2**20,
                        IN_FLIGHT * budget_bytes / 2**20)
        passes[-1].append(name)
        used += size
    return passes
