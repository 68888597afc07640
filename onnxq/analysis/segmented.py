"""Run one-at-a-time and leave-one-out configurations from cached prefixes (see onnxq/rewrite/segments.py).

The gated model is cut into segments. Walking the cuts in order, two base states are advanced segment by
segment over all evaluation samples: the float one (every gate off) and the fully quantized one (every
gate on). A configuration whose units before cut ``j`` agree with a base (one at a time: all float
before ``u``; leave one out: all quantized before ``u``) starts from that base's tensors at cut ``j`` and
runs only the remaining segments. Only the current cut's two states are held, so memory is
``2 x samples x (tensors alive at the cut)``; :func:`live_bytes` measures it on one sample first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from onnxq import runtime
from onnxq.collect.feeds import Feed
from onnxq.rewrite.gates import GatedModel
from onnxq.rewrite.segments import GatedSegment, split_gated

log = logging.getLogger(__name__)

State = list[dict[str, np.ndarray]]  # per sample: the tensors alive at a cut


class SegmentRunner:
    """The segments of one gated model, each with its own onnxruntime session."""

    def __init__(self, gated: GatedModel, segments: int, *, exact: bool, threads: int | None) -> None:
        self.gated = gated
        self.segments: tuple[GatedSegment, ...] = split_gated(gated, segments)
        self.sessions = [runtime.make_session(s.model, optimize=not exact, fake_quant=True, threads=threads)
                         for s in self.segments]
        self.outputs = [o.name for o in gated.model.graph.output]

    def segment_of(self, unit_index: int) -> int:
        return max(j for j, s in enumerate(self.segments) if s.first_unit <= unit_index)

    def advance(self, j: int, state: dict[str, np.ndarray], gates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The tensors alive after segment ``j``, from those alive before it."""
        seg = self.segments[j]
        feed = {name: state[name] for name in seg.inputs}
        if seg.uses_gates:
            feed.update(gates)
        live = dict(state)
        live.update(zip(seg.outputs, runtime.run(self.sessions[j], feed, seg.outputs)))
        return {name: live[name] for name in seg.live_after}

    def finish(self, j: int, state: dict[str, np.ndarray], gates: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The model outputs, running segments ``j..`` from ``state`` (the tensors alive at cut ``j``)."""
        for k in range(j, len(self.segments)):
            state = self.advance(k, state, gates)
        return [state[name] for name in self.outputs]


def live_bytes(runner: SegmentRunner, feed: Feed) -> int:
    """The largest number of bytes alive at a cut for one sample (float base)."""
    state, gates, worst = dict(feed), runner.gated.feed(()), 0
    for j in range(len(runner.segments)):
        worst = max(worst, sum(np.asarray(v).nbytes for v in state.values()))
        state = runner.advance(j, state, gates)
    return worst


def run_from_cuts(
    runner: SegmentRunner,
    feeds: Sequence[Feed],
    jobs: Sequence[tuple[int, str, tuple[str, ...]]],
    execute: Callable[[list[Callable[[], list[list[np.ndarray]]]]], list],
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]], list]:
    """Outputs of the float and fully quantized models, and ``execute``'s results for ``jobs``.

    ``jobs``: (segment index, "float" or "quant" base, quantized units). ``execute`` receives, segment
    by segment, thunks producing each job's outputs (per sample, list of outputs) and returns one result per
    thunk, in order (it may run them in parallel and reduce them to scores).
    """
    none, every = runner.gated.feed(()), runner.gated.feed(runner.gated.units)
    base = {"float": [dict(f) for f in feeds], "quant": [dict(f) for f in feeds]}
    results: list = [None] * len(jobs)
    for j in range(len(runner.segments)):
        mine = [k for k, job in enumerate(jobs) if job[0] == j]
        thunks = [_thunk(runner, j, base[jobs[k][1]], runner.gated.feed(jobs[k][2])) for k in mine]
        for k, result in zip(mine, execute(thunks) if thunks else []):
            results[k] = result
        base = {name: [runner.advance(j, s, none if name == "float" else every) for s in states]
                for name, states in base.items()}
    outs = {name: [[s[o] for o in runner.outputs] for s in states] for name, states in base.items()}
    return outs["float"], outs["quant"], results


def _thunk(runner: SegmentRunner, j: int, states: State, gates: dict[str, np.ndarray]):
    return lambda: [runner.finish(j, s, gates) for s in states]
