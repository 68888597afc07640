"""One pass over the data: onnxruntime runs batch ``k + 1`` while worker threads count batch ``k``.

Where the time goes, and the overlap. For EfficientNet-Lite0 (50 planned tensors, 6.7 M activation
elements per image) the CPU time per image is ~11 ms of onnxruntime (optimised graph, four images per
run), ~10 ms of histogram counting with the compiled kernel (~18 ms with numpy alone) and ~5 ms of
bias-correction means, all memory-bound. onnxruntime releases the GIL while it runs, and the counting
kernel, numpy's ufunc loops and BLAS release it too, so batch ``k`` is counted in worker threads while
the main thread runs batch ``k + 1``: the wall time is about the total CPU time over the cores, not the
sum of the stages. The tensors are shared out between the workers by bytes for the first batch, then by
each tensor's measured time, and batch ``k + 1`` is handed out only when batch ``k`` is counted, so
every tensor sees its batches in order: the statistics are the same as a sequential loop's, bit for
bit, for any number of workers and any sharing. onnxruntime gets every core (:mod:`onnxq.collect.threads`)
and BLAS is held to one thread meanwhile (its own threads would spin against onnxruntime's).

Other reductions. Caller-given ``Reducer``s (a per-batch reduction of one tensor and an in-order merge,
e.g. the input means bias correction needs) run in the same workers, on the same exposed values: one run
of the model serves both.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from onnxq import runtime
from onnxq.collect import augment, coalesce, threads
from onnxq.collect.feeds import Feed, batch_size
from onnxq.collect.memory import assumed_bytes
from onnxq.collect.stats import TensorStats, observe
from onnxq.errors import CalibrationDataError

log = logging.getLogger(__name__)


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
class State:
    """What the passes so far produced: statistics by tensor, and each reducer's running result."""

    stats: dict[str, TensorStats]
    reduced: dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One unit of a worker's share: the statistics of ``tensor`` (reducer None) or one reducer."""

    tensor: str
    reducer: Reducer | None = None


def jobs_by_tensor(
    names: Sequence[str], planned: set[str], reducers: Sequence[Reducer]
) -> dict[str, list[Job]]:
    """Per exposed tensor, the jobs reading it (its statistics if planned, then its reducers in order)."""
    jobs: dict[str, list[Job]] = {n: ([Job(n)] if n in planned else []) for n in names}
    for r in reducers:
        if r.tensor in jobs:
            jobs[r.tensor].append(Job(r.tensor, r))
    return jobs


def run_pass(
    model: onnx.ModelProto,
    group: list[str],
    jobs: Mapping[str, list[Job]],
    sizes: Mapping[str, float | None],
    data: Iterable[Feed],
    state: State,
    optimize: bool,
    bar: tqdm,
    limit: int = 1,
    reference: Sequence[str] = (),
) -> tuple[State, int, int, Reference | None]:
    """Run ``group`` exposed over ``data``; count batch k in workers (one per share) while batch k+1 runs.

    ``jobs`` maps each tensor to read (exposed, or from the feed) to its jobs. Batch k+1 is submitted
    only once batch k is done: every tensor and reducer sees its batches in order, whatever the number of
    workers and however the tensors are shared out. The first batch is shared by bytes; later ones by
    each tensor's measured time in the batch before (a tensor with reducers costs more than its bytes
    say: shared by bytes, one EfficientNet-Lite0 worker had twice the other's work). Up to ``limit``
    feeds run as one batch once the first ones are shown to give the same values that way
    (``onnxq.collect.coalesce``); returns the state, the samples seen, the limit kept and, when
    ``reference`` names outputs of the model, the first feed with their values (run with it, see
    :class:`Reference`).
    """
    session, exposed = None, None
    if group:
        exposed = augment.exposure(model, group)  # body tensors are routed out (augment.exposure)
        session = runtime.make_session(exposed.model, optimize=optimize, threads=threads.ort_threads(),
                                       spinning=False)
    fetch = list(exposed.outputs) if exposed is not None else []
    if exposed is not None and not set(reference) <= {o.name for o in exposed.model.graph.output}:
        reference = ()  # (routing body tensors out keeps the model's outputs; should it not, run without)
    position = {name: k for k, name in enumerate(group)}
    names, workers = list(jobs), threads.count_workers()
    weights: Mapping[str, float | None] = sizes
    samples = 0
    pending: list[Future] = []
    # The workers already fill the cores onnxruntime leaves: BLAS threads of their own (the reducers'
    # matmuls) would only spin against onnxruntime (measured: +1.1 s on 100 EfficientNet-Lite0 images).
    with threadpool_limits(limits=1, user_api="blas"), \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnxq-count") as pool:
        try:
            items, limit, first = _batches(session, fetch, data, limit, reference)
            for feed, n, outputs in items:
                if outputs is None:
                    outputs = runtime.run(session, feed, fetch) if session is not None else []
                if exposed is not None:
                    outputs = exposed.values(outputs)
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
    return state, samples, limit, first


@dataclass(frozen=True)
class Reference:
    """The float model's outputs for the first feed of a pass, fetched in the run that collects it.

    Why: the final check compares the quantized model's outputs on the first feed with the float
    model's; building a float session only for them cost ~40 ms (EfficientNet-Lite0). These come from
    the calibration session (graph optimisations on, so they differ from the reference kernels' by
    kernel rounding, far below int8's error).
    """

    feed: Feed
    outputs: list[np.ndarray]

    def ran(self, feed: Feed) -> bool:
        """Whether ``feed`` is the feed these outputs are of (same names, dtypes, shapes and values)."""
        return self.feed.keys() == feed.keys() and all(
            np.asarray(self.feed[k]).dtype == np.asarray(v).dtype and np.shape(self.feed[k]) == np.shape(v)
            and np.array_equal(self.feed[k], v) for k, v in feed.items())


_Item = tuple[Feed, int, "list[np.ndarray] | None"]  # feed, source feeds in it, outputs if already run


def _batches(session, group: list[str], data: Iterable[Feed], limit: int,
             reference: Sequence[str] = ()) -> tuple[Iterable[_Item], int, Reference | None]:
    """The runs of a pass: single feeds, or up to ``limit`` joined once the first group checks out; and
    the first feed's values of ``reference`` (outputs of the model), fetched in its run.

    The check runs the first feeds one by one (their outputs are kept and counted, nothing is run
    twice but the one batched run) and as one batch; any difference keeps the whole pass unbatched.
    """
    data = iter(data)
    if session is None:
        return ((feed, 1, None) for feed in data), 1, None
    head = list(itertools.islice(data, max(limit, 1)))
    if not head:
        return iter(()), 1, None
    extra = [name for name in reference if name not in group]
    values = dict(zip([*group, *extra], runtime.run(session, head[0], [*group, *extra]), strict=True))
    first = Reference(head[0], [values[name] for name in reference]) if reference else None
    singles = [[values[name] for name in group]] + [runtime.run(session, feed, group) for feed in head[1:]]
    run = [(feed, 1, out) for feed, out in zip(head, singles, strict=True)]
    if limit <= 1:
        return itertools.chain(run, ((feed, 1, None) for feed in data)), 1, first
    ok = len(head) > 1 and all(coalesce.joinable(head[0], f) for f in head[1:]) and coalesce.same_when_batched(
        lambda feed: session.run(group, dict(feed)), head, singles)
    if not ok:
        log.debug("calibrating one feed per run: batching the first feeds changed the collected values")
        return itertools.chain(run, ((feed, 1, None) for feed in data)), 1, first
    return itertools.chain(run, ((feed, n, None) for feed, n in coalesce.coalesce(data, limit))), limit, first


def _gather(state: State, pending: list[Future]) -> tuple[State, dict[str, float]]:
    """``state`` updated with the results of the workers' batch (waits for every one), and the seconds
    each tensor's jobs took."""
    results = [future.result() for future in pending]
    if not results:
        return state, {}
    stats = {**state.stats, **{k: v for r, _ in results for k, v in r.stats.items()}}
    reduced = {**state.reduced, **{k: v for r, _ in results for k, v in r.reduced.items()}}
    return State(stats, reduced), {k: v for _, costs in results for k, v in costs.items()}


def _run_jobs(
    state: State, jobs: Sequence[Job], values: Sequence[np.ndarray]
) -> tuple[State, dict[str, float]]:
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
            elif value.size == 0:
                continue  # a body tensor whose If branch did not run in this batch: nothing to reduce
            else:
                r = job.reducer
                reduced[r.key] = r.merge(state.reduced[r.key], r.reduce(value))
        except CalibrationDataError as exc:
            raise CalibrationDataError(f"tensor {job.tensor!r}: {exc}") from None
        costs[job.tensor] = costs.get(job.tensor, 0.0) + time.perf_counter() - start
    return State(stats, reduced), costs


def partition(names: Sequence[str], sizes: Mapping[str, float | None], workers: int) -> list[list[str]]:
    """Split ``names`` into at most ``workers`` shares of about equal weight (bytes, or measured seconds;
    largest first, to the lightest).

    Deterministic: ties go to the lowest share, and each share keeps plan order.
    """
    load = [0.0] * max(1, min(workers, len(names)))
    owner: dict[str, int] = {}
    weight = {n: assumed_bytes(sizes.get(n)) for n in names}
    for name in sorted(names, key=lambda n: -weight[n]):
        k = load.index(min(load))
        owner[name] = k
        load[k] += weight[name]
    shares = [[n for n in names if owner[n] == k] for k in range(len(load))]
    return [share for share in shares if share]
