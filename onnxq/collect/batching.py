"""Regrouping a stream of feeds: the first N (:func:`take`, ``--calib-size``) and N feeds joined along the
batch axis (:func:`batched`, ``--batch-size``). Automatic batching, which checks it changes no value, is
:mod:`onnxq.collect.coalesce`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from onnxq.collect.feeds import DataSource, Feed, InputSpec, format_shape
from onnxq.errors import CalibrationDataError, ConfigError

logger = logging.getLogger(__name__)


def take(source: DataSource, limit: int) -> DataSource:
    """The first ``limit`` feeds of ``source`` (e.g. ``--calib-size``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"sample limit must be a positive integer, got {limit!r}")
    if source.count is not None and source.count <= limit:
        return source  # nothing to cut: no ", first N" in the description either
    return DataSource(lambda: itertools.islice(source, limit),
                      f"{source.description}, first {limit}", limit if source.count is not None else None)


def select(source: DataSource, indices: Sequence[int], what: str) -> DataSource:
    """The feeds of ``source`` at ``indices`` (in source order), described as ``what`` of it.

    The source is read through once per iteration, feeds not selected are dropped as they come, so a
    selection costs no memory beyond the feeds it yields.
    """
    wanted = frozenset(indices)
    last = max(wanted, default=-1)

    def opener() -> Iterable[Feed]:
        for i, feed in enumerate(itertools.islice(source, last + 1)):
            if i in wanted:
                yield feed

    return DataSource(opener, f"{source.description}, {what}", len(wanted))


def batched(source: DataSource, batch_size: int, specs: Sequence[InputSpec] | None = None) -> DataSource:
    """Concatenate each ``batch_size`` consecutive feeds along axis 0 (fewer model runs, same samples).

    Only for models whose batch dim is dynamic, or fixed at exactly ``batch_size``: a model exported with
    a static batch of 1 forbids it (checked here when ``specs`` are given, else by validation). With a
    fixed batch the incomplete last group is dropped (and logged); with a dynamic one it is kept.
    Feeds of one group must agree in every dim but the first (pad sequences to one length).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    fixed = {s.name: s.shape[0] for s in specs or () if s.shape and isinstance(s.shape[0], int)}
    for name, dim in fixed.items():
        if dim != batch_size:
            raise CalibrationDataError(
                f"input '{name}' has a fixed batch dimension of {dim}, so samples cannot be batched "
                f"{batch_size} at a time; use batch size {dim} or export the model with a dynamic batch")
    if batch_size == 1:
        return source

    def opener() -> Iterator[Feed]:
        group: list[Mapping[str, Any]] = []
        for index, feed in enumerate(source):
            group.append(feed)
            if len(group) == batch_size:
                yield _concat(group, index + 1 - batch_size)
                group = []
        if group and fixed:
            logger.warning("dropped the last %d sample(s): the model's batch is fixed at %d",
                           len(group), batch_size)
        elif group:
            yield _concat(group, index + 1 - len(group))

    count = None
    if source.count is not None:
        count = source.count // batch_size if fixed else -(-source.count // batch_size)
    return DataSource(opener, f"{source.description}, {batch_size} per batch", count)


def _concat(group: list[Mapping[str, Any]], first: int) -> Feed:
    names = list(group[0])
    out: Feed = {}
    for offset, feed in enumerate(group):
        if not isinstance(feed, Mapping) or set(feed) != set(names):
            raise CalibrationDataError(f"cannot batch samples {first} and {first + offset}: they feed "
                                       "different inputs; every sample must give the same input names")
    for name in names:
        arrays = [np.asarray(feed[name]) for feed in group]
        ref = arrays[0]
        for offset, array in enumerate(arrays):
            if array.ndim == 0 or array.shape[1:] != ref.shape[1:] or array.dtype != ref.dtype:
                raise CalibrationDataError(
                    f"cannot batch samples {first} and {first + offset}: input '{name}' is {ref.dtype} "
                    f"{format_shape(ref.shape)} in one and {array.dtype} {format_shape(array.shape)} in the "
                    "other; give all samples one shape and dtype (pad sequences) or use batch size 1")
        out[name] = np.concatenate(arrays, axis=0)
    return out
