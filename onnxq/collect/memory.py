"""The collection's memory plan: bytes of each exposed tensor per batch, and passes that fit the budget.

Memory. O(model + two batches of exposed tensors + histograms), whatever the number of samples: each
batch is reduced to statistics and dropped. When two batches of the exposed tensors would exceed
``memory_mb``, the tensors are split over several passes over the data, each with its own session;
the statistics are identical to one pass (each tensor is observed once per batch, in order).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from onnxq import runtime
from onnxq.collect import augment
from onnxq.collect.feeds import Feed
from onnxq.collect.threads import ort_threads
from onnxq.config import QuantConfig
from onnxq.errors import ConfigError

log = logging.getLogger(__name__)

UNKNOWN_TENSOR_MB = 16.0  # assumed size of a tensor whose shape inference left unresolved dims
IN_FLIGHT = 2  # batches of exposed tensors alive at once: one being counted, one being computed


def assumed_bytes(size: float | None) -> float:
    """``size``, or ``UNKNOWN_TENSOR_MB`` for a tensor of unknown size (None)."""
    return UNKNOWN_TENSOR_MB * 2**20 if size is None else float(size)


def memory_budget(config: QuantConfig, memory_mb: float | None) -> float:
    """The budget in bytes: ``memory_mb`` if given, else ``config.collect_memory_mb``."""
    value = config.collect_memory_mb if memory_mb is None else memory_mb
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"the collection memory budget must be a positive number of MB, got {value!r}")
    return float(value) * 2**20


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
        exposed = augment.exposure(model, group)
        session = runtime.make_session(exposed.model, threads=ort_threads(), spinning=False)
        values = exposed.values(runtime.run(session, feed, list(exposed.outputs)))
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
        size = assumed_bytes(sizes.get(name))
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
