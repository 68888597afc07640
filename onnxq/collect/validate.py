"""The checks every feed passes before it reaches onnxruntime (:func:`validate_feed`, :func:`validated`).

Why so strict (:func:`validate_feed`): a wrong feed rarely crashes. A missing batch axis, a float64
array, int pixels where floats are expected or a single NaN silently give wrong scales, and the quantized
model is then quietly bad; onnxruntime's own errors name neither the sample nor the fix. So each feed is
checked against the model's declared inputs, and each message names the sample, the input, what the model
expects (dynamic dims by name) and what it got.

Dtype policy: only value-preserving conversions happen, each logged once per pass.
- float -> another float type (float64 given to a float32 input): converted; overflow is an error.
- int/bool -> float: converted when exact. uint8 pixels keep their values: no scaling is applied.
- int/bool -> another int type (int32 token ids for an int64 input): converted when every value fits.
- float -> int, and anything but bool -> bool: error, since it would change values.
NaN and Inf are rejected: one of them turns a min/max or a histogram range into NaN/Inf.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from onnxq.collect.feeds import DataSource, Feed, InputSpec, format_shape
from onnxq.errors import CalibrationDataError, one_line

logger = logging.getLogger(__name__)


def validate_feed(feed: Mapping[str, Any], specs: Sequence[InputSpec], index: int, *,
                  origin: str | None = None, converted: set | None = None,
                  check_batch: bool = True) -> Feed:
    """Check one feed against the model's inputs and return it as arrays in the input dtypes.

    Checks: it is a mapping; no input missing or extra; rank and static dims match; inputs that share a
    dim name agree; dtype matches or converts without changing values (module docstring); no NaN/Inf.
    ``origin`` (e.g. a file name) is added to messages; ``converted`` collects conversions already
    logged, so a pass over many feeds logs each kind once. ``check_batch=False`` lets a static batch dim
    differ (a source checking single samples that :func:`batched` will group later).
    """
    where = f"calibration sample {index}" + (f" ({origin})" if origin else "")
    expected = ", ".join(f"'{s.name}' {s.describe()}" for s in specs)
    if not isinstance(feed, Mapping):
        raise CalibrationDataError(f"{where} is a {type(feed).__name__}, not a dict of input name -> "
                                   f"array; the model expects {expected}")
    missing = [s.name for s in specs if s.name not in feed]
    extra = [str(k) for k in feed if k not in {s.name for s in specs}]
    if missing or extra:
        problems = ([f"missing input(s) {', '.join(map(repr, missing))}"] if missing else []) + \
                   ([f"unknown input(s) {', '.join(map(repr, extra))}"] if extra else [])
        raise CalibrationDataError(f"{where}: {' and '.join(problems)}; the model expects {expected}")
    out: Feed = {}
    bound: dict[str, tuple[int, str]] = {}
    for spec in specs:
        try:
            array = np.asarray(feed[spec.name])
        except (ValueError, TypeError) as exc:
            raise CalibrationDataError(f"{where}, input '{spec.name}': expected {spec.describe()}, got "
                                       f"a value numpy cannot turn into an array ({one_line(exc)})") from exc
        _check_shape(array, spec, where, bound, check_batch)
        _check_finite(array, spec, where)
        out[spec.name] = _convert(array, spec, where, converted)
    return out


def _fail(array: np.ndarray, spec: InputSpec, where: str, why: str) -> CalibrationDataError:
    return CalibrationDataError(f"{where}, input '{spec.name}': expected {spec.describe()}, "
                                f"got {array.dtype} {format_shape(array.shape)}; {why}")


def _check_shape(array: np.ndarray, spec: InputSpec, where: str, bound: dict[str, tuple[int, str]],
                 check_batch: bool) -> None:
    if array.size == 0 and 0 not in (spec.shape or ()):
        raise _fail(array, spec, where, "the array is empty: drop this sample or fill it")
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape):
        hint = ("add the batch dimension (x[np.newaxis])" if array.ndim == len(spec.shape) - 1
                else "reshape the data to the model's input rank")
        raise _fail(array, spec, where, f"rank {array.ndim} instead of {len(spec.shape)}: {hint}")
    for axis, (dim, size) in enumerate(zip(spec.shape, array.shape)):
        if isinstance(dim, int) and dim != size and (axis > 0 or check_batch):
            hint = (f"the model's batch dimension is fixed at {dim}: feed {dim} sample(s) at a time"
                    if axis == 0 else "resize or reshape the data to the model's input shape")
            raise _fail(array, spec, where, f"axis {axis} is {size}, not {dim}: {hint}")
        if isinstance(dim, str):
            seen_size, seen_in = bound.setdefault(dim, (size, spec.name))
            if seen_size != size:
                raise _fail(array, spec, where, f"dimension '{dim}' is {size} here but {seen_size} in "
                            f"input '{seen_in}': inputs sharing a dimension name must agree")


def _check_finite(array: np.ndarray, spec: InputSpec, where: str) -> None:
    if array.dtype.kind != "f":
        return
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise _fail(array, spec, where, f"{bad} of {array.size} values are NaN or Inf, which would corrupt "
                    "the calibration ranges: fix or drop this sample")


def _convert(array: np.ndarray, spec: InputSpec, where: str, converted: set | None) -> np.ndarray:
    want, kind = spec.dtype, array.dtype.kind
    if array.dtype == want:
        return array
    if want.kind in "OSU" or kind in "OSU":
        if want.kind in "OSU" and kind in "OSU":
            return array
        raise _fail(array, spec, where, f"pass {want} arrays")
    if want.kind == "b" or kind not in "biuf":
        raise _fail(array, spec, where, f"{array.dtype} cannot feed a {want} input: pass {want} arrays")
    if kind == "f" and want.kind in "iu":
        raise _fail(array, spec, where, "float values cannot feed an integer input without changing them: "
                    f"pass {want} arrays (x.astype(np.{want}) if the values are whole numbers)")
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(want)
        exact = kind == "f" or np.array_equal(out.astype(array.dtype), array)
    if not exact:
        raise _fail(array, spec, where, f"some values cannot be represented exactly in {want}: "
                    f"pass {want} arrays with values in its range")
    if kind == "f" and not np.isfinite(out).all():
        raise _fail(array, spec, where, f"some values exceed the {want} range: rescale the data")
    key = (spec.name, str(array.dtype))
    if converted is None or key not in converted:
        level = logging.WARNING if kind in "biu" and want.kind == "f" else logging.INFO
        logger.log(level, "input '%s': converting %s data to %s (values unchanged%s)", spec.name,
                   array.dtype, want, ", no scaling" if level == logging.WARNING else "")
        if converted is not None:
            converted.add(key)
    return out


def validated(source: DataSource, specs: Sequence[InputSpec]) -> DataSource:
    """``source`` with every feed passed through :func:`validate_feed`; a pass that yields no feed at all
    raises CalibrationDataError instead of calibrating on nothing."""
    specs = tuple(specs)

    def opener() -> Iterator[Feed]:
        converted: set = set()
        index = -1
        for index, feed in enumerate(source):
            yield validate_feed(feed, specs, index, converted=converted)
        if index < 0:
            raise CalibrationDataError(f"{source.description} produced no samples; give at least one")

    return DataSource(opener, source.description, source.count)
