"""Calibration data, the public namespace ``onnxq.data``: where sample feeds come from.

A *feed* is one ``dict[str, np.ndarray]`` mapping each model input name to an array WITH the batch
dimension: exactly what ``onnxruntime.InferenceSession.run`` takes. A :class:`DataSource` is a
re-iterable, deterministic stream of feeds plus a ``count`` (for progress bars) and a one-line
``description`` (for the report). Every ``iter()`` starts over, so one source can drive calibration,
then comparison, then sensitivity analysis, and two runs see the samples in the same order (files are
read in sorted name order, random data is seeded).

This module gathers the sources users call; each lives in the module that owns its job:
:mod:`~onnxq.collect.feeds` (Feed, InputSpec, DataSource), :mod:`~onnxq.collect.folders` (.npy/.npz
folders), :mod:`~onnxq.collect.images` (image folders and their preprocessing),
:mod:`~onnxq.collect.random_feeds`, :mod:`~onnxq.collect.python_sources` (a load_data() script, an
iterable), :mod:`~onnxq.collect.validate` (the checks every feed passes) and
:mod:`~onnxq.collect.batching` (take, batched).
"""

from __future__ import annotations

from onnxq.collect.batching import batched, take
from onnxq.collect.feeds import DataSource, Feed, InputSpec, input_specs_from_model
from onnxq.collect.folders import from_dir
from onnxq.collect.python_sources import from_iterable, from_script
from onnxq.collect.random_feeds import random_data, resolve_shape
from onnxq.collect.validate import validate_feed, validated
from onnxq.errors import CalibrationDataError

__all__ = [
    "CalibrationDataError", "DataSource", "Feed", "InputSpec", "batched", "from_dir", "from_iterable",
    "from_script", "input_specs_from_model", "random_data", "resolve_shape", "take", "validate_feed",
    "validated",
]
