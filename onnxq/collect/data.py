"""Calibration data sources: where sample feeds come from, and the checks every feed passes.

A *feed* is one ``dict[str, np.ndarray]`` mapping each model input name to an array WITH the batch
dimension: exactly what ``onnxruntime.InferenceSession.run`` takes. A :class:`DataSource` is a
re-iterable, deterministic stream of feeds plus a ``count`` (for progress bars) and a one-line
``description`` (for the report). Every ``iter()`` starts over, so one source can drive calibration,
then comparison, then sensitivity analysis, and two runs see the samples in the same order (files are
read in sorted name order, random data is seeded). Image folders live in :mod:`onnxq.collect.images`.

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

import dataclasses
import importlib.machinery
import importlib.util
import itertools
import logging
import re
import sys
import traceback
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx

from onnxq.errors import CalibrationDataError, ConfigError, UnsupportedModelError
from onnxq.graph.int_inputs import IntegerRange, integer_input_ranges

__all__ = [
    "DataSource", "Feed", "InputSpec", "batched", "from_dir", "from_iterable", "from_script",
    "input_specs_from_model", "random_data", "resolve_shape", "take", "validate_feed", "validated",
]

logger = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
Dim = Union[int, str, None]
PathArg = Union[str, PathLike]


@dataclass(frozen=True)
class InputSpec:
    """One model input as data must match it.

    ``shape`` holds an int per static dim and the ``dim_param`` name (str) or None per dynamic dim;
    ``shape=None`` means the model declares no shape at all (any rank is accepted). ``values``: for an
    integer input, the values its graph allows (token ids below the embedding table's size, a 0/1 mask),
    which random data respects; None when unknown or not an integer input.
    """

    name: str
    shape: tuple[Dim, ...] | None
    dtype: np.dtype
    values: IntegerRange | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))

    def describe(self) -> str:
        """``float32 [batch, 3, 224, 224]``: the form every error message uses."""
        return f"{self.dtype} {format_shape(self.shape)}"


def format_shape(shape: Sequence[Dim] | None) -> str:
    """``[batch, 3, ?, 224]``: dynamic dims by name, unnamed ones as ``?``."""
    if shape is None:
        return "[any shape]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _dim_name(param: str) -> str | None:
    """A named dynamic dim, or None; exporters write "?" for "unknown", which must not bind across dims."""
    return param if param and param.strip("?") else None


def input_specs_from_model(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a feed must provide: graph inputs that are not initializers (IR < 4 lists weights
    as inputs too), with element types mapped to numpy dtypes."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {t.values.name for t in model.graph.sparse_initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in constants:
            continue
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type" or vi.type.tensor_type.elem_type == onnx.TensorProto.UNDEFINED:
            raise UnsupportedModelError(
                f"model input '{vi.name}' is not a tensor with a known element type ({kind}); "
                "onnxq calibrates models whose inputs are plain tensors")
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            # Exporters sometimes write -1 (or 0) for a dynamic dim: treat any non-positive value as dynamic.
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (_dim_name(d.dim_param))
                          for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, shape, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)))
    ranges = integer_input_ranges(model, [s.name for s in specs])  # {} unless an input is an integer
    return [dataclasses.replace(s, values=ranges[s.name]) if s.name in ranges else s for s in specs]


@dataclass(frozen=True)
class DataSource:
    """A re-iterable stream of feeds: each ``iter()`` calls ``opener`` and starts over.

    ``count`` is the number of feeds when known (None otherwise); ``description`` is one line for the
    report, e.g. ``"100 .npy files in calib/"``.
    """

    opener: Callable[[], Iterable[Feed]] = field(repr=False)
    description: str
    count: int | None = None

    def __iter__(self) -> Iterator[Feed]:
        return iter(self.opener())


# ----------------------------------------------------------------------------- folders of arrays

def existing_dir(path: PathArg, what: str) -> Path:
    """``path`` as a folder, or a CalibrationDataError saying what was expected there."""
    folder = Path(path)
    if not folder.exists():
        raise CalibrationDataError(f"{what} folder '{folder}' does not exist; check the path")
    if not folder.is_dir():
        raise CalibrationDataError(f"'{folder}' is a file, not a folder; pass the folder holding the {what}")
    return folder


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files directly in ``folder`` whose suffix (any case) is in ``suffixes``, by sorted name."""
    return sorted((f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in suffixes),
                  key=lambda f: f.name)


def from_dir(path: PathArg, specs: Sequence[InputSpec]) -> DataSource:
    """Feeds from a folder of ``.npy`` files (single-input models: one array per file) or ``.npz``
    files (one per sample, keyed by input name). An array with one dim fewer than the input's rank
    gets a batch axis of 1. Files are read lazily, in sorted name order, never with pickle."""
    specs = tuple(specs)
    folder = existing_dir(path, "calibration data")
    names = ", ".join(s.name for s in specs)
    files = list_files(folder, (".npy", ".npz"))
    if not files:
        raise CalibrationDataError(
            f"no .npy or .npz files in '{folder}'; expected one .npy per sample (single-input models) "
            f"or one .npz per sample holding arrays named after the inputs ({names})")
    kinds = {f.suffix.lower() for f in files}
    if len(kinds) > 1:
        raise CalibrationDataError(f"'{folder}' mixes .npy and .npz files; keep one kind per folder")
    if kinds == {".npy"} and len(specs) != 1:
        raise CalibrationDataError(
            f"'{folder}' holds .npy files, which feed a single-input model, but this model has "
            f"{len(specs)} inputs ({names}); save one .npz per sample: np.savez(f, **{{name: array}})")
    load = _load_npy if kinds == {".npy"} else _load_npz

    def opener() -> Iterator[Feed]:
        converted: set = set()
        for index, file in enumerate(files):
            feed = load(file, specs)
            yield validate_feed(feed, specs, index, origin=file.name, converted=converted, check_batch=False)

    return DataSource(opener, f"{len(files)} {kinds.pop()} files in {path}", len(files))


def _np_load(file: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        with open(file, "rb") as stream:
            magic = stream.read(6)
        if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
            raise ValueError("no .npy or .npz header")
        data = np.load(file, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {key: data[key] for key in data.files}
        return data
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CalibrationDataError(
                f"'{file}' holds Python objects, which onnxq never unpickles; save numeric arrays "
                "(np.save / np.savez with numeric dtypes)") from exc
        raise CalibrationDataError(f"cannot read '{file}': {one_line(exc)}; re-save it with numpy") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CalibrationDataError(f"cannot read '{file}': {one_line(exc)}; re-save it with numpy") from exc


def _with_batch_axis(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.shape is not None and array.ndim == len(spec.shape) - 1:
        return array[np.newaxis]
    return array


def _load_npy(file: Path, specs: tuple[InputSpec, ...]) -> dict[str, Any]:
    array = _np_load(file)
    if isinstance(array, dict):
        raise CalibrationDataError(f"'{file}' is an .npz archive named .npy; rename it to .npz")
    return {specs[0].name: _with_batch_axis(array, specs[0])}


def _load_npz(file: Path, specs: tuple[InputSpec, ...]) -> dict[str, Any]:
    arrays = _np_load(file)
    if not isinstance(arrays, dict):
        raise CalibrationDataError(f"'{file}' is a plain .npy array named .npz; rename it to .npy")
    if arrays and all(re.fullmatch(r"arr_\d+", k) for k in arrays) and not any(
            s.name in arrays for s in specs):
        names = ", ".join(f"{s.name}=..." for s in specs)
        raise CalibrationDataError(
            f"'{file}' holds unnamed arrays ({', '.join(arrays)}); save them by input name: "
            f"np.savez(path, {names})")
    by_name = {s.name: s for s in specs}
    return {k: _with_batch_axis(v, by_name[k]) if k in by_name else v for k, v in arrays.items()}


# ----------------------------------------------------------------------------- random data

def resolve_shape(spec: InputSpec, dims: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """Concrete shape of ``spec``: dynamic dims from ``dims`` (keyed by dim_param name, or
    ``"input:axis"`` for unnamed dims); a dynamic first (batch) dim defaults to 1."""
    dims = dims or {}
    if spec.shape is None:
        raise CalibrationDataError(
            f"input '{spec.name}' declares no shape, so random data cannot be made for it; "
            "give real calibration data (a folder of .npy/.npz files or a load_data() script)")
    shape = []
    for axis, dim in enumerate(spec.shape):
        key = dim if isinstance(dim, str) else f"{spec.name}:{axis}"
        if isinstance(dim, int):
            shape.append(dim)
        elif key in dims:
            shape.append(int(dims[key]))
        elif axis == 0:
            shape.append(1)
        else:
            raise CalibrationDataError(
                f"input '{spec.name}' {format_shape(spec.shape)} has a dynamic dimension '{key}' "
                f"(axis {axis}) with no value; pass --dim {key}=VALUE (dims={{'{key}': VALUE}} in Python)")
    return tuple(shape)


def _check_dims(specs: Sequence[InputSpec], dims: Mapping[str, int]) -> None:
    known = {d if isinstance(d, str) else f"{s.name}:{a}"
             for s in specs for a, d in enumerate(s.shape or ()) if not isinstance(d, int)}
    for key, value in dims.items():
        if key not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"--dim {key}: the model has no dynamic dimension '{key}' "
                              f"(its dynamic dimensions: {listed})")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"--dim {key}={value}: a dimension must be a positive integer")


def _bound(value: float | Mapping[str, float] | None, spec: InputSpec) -> float | None:
    return value.get(spec.name) if isinstance(value, Mapping) else value


def random_data(specs: Sequence[InputSpec], count: int, *, seed: int = 0,
                dims: Mapping[str, int] | None = None,
                low: float | Mapping[str, float] | None = None,
                high: float | Mapping[str, float] | None = None,
                distribution: str = "uniform") -> DataSource:
    """``count`` random feeds shaped and typed as the model declares: a smoke test of the pipeline,
    not a calibration (ranges from random data do not reflect real activations).

    Floats: uniform in [low, high) (default [0, 1)), or ``distribution="normal"``: N(0, 1) clipped to
    [low, high] when given. Ints: uniform in [low, high) when given; otherwise what the graph allows
    (``spec.values``, from :func:`input_specs_from_model`): token ids in [0, rows of the embedding
    table), masks as 0/1 rows that start with at least one 1; an integer input whose use gives no
    bound gets [0, 2) and a warning naming it; a spec without ``values`` gets [0, 100). Bools: fair coin.
    ``low``/``high`` are one number for all inputs or a mapping input name -> number. The same seed
    gives the same feeds, on every iteration.
    """
    specs = tuple(specs)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"random data count must be a positive integer, got {count!r}")
    if distribution not in ("uniform", "normal"):
        raise ConfigError(f"random data distribution '{distribution}' is not one of: uniform, normal")
    for bound in (low, high):
        unknown = set(bound) - {s.name for s in specs} if isinstance(bound, Mapping) else set()
        if unknown:
            raise ConfigError(f"random data range given for unknown input(s) {sorted(unknown)}; "
                              f"the model's inputs are: {', '.join(s.name for s in specs)}")
    dims = dict(dims or {})
    _check_dims(specs, dims)
    plan = [(s, resolve_shape(s, dims), _bound(low, s), _bound(high, s)) for s in specs]
    for spec, _, lo, hi in plan:
        if lo is not None and hi is not None and lo >= hi:
            raise ConfigError(f"random data range for input '{spec.name}' is empty: low {lo} >= high {hi}")
        if lo is None and hi is None and spec.dtype.kind in "iu":
            _check_graph_range(spec)

    def opener() -> Iterator[Feed]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield {s.name: _random_array(rng, s, shape, lo, hi, distribution) for s, shape, lo, hi in plan}

    return DataSource(opener, f"{count} random samples ({distribution}, seed {seed})", count)


def _check_graph_range(spec: InputSpec) -> None:
    """Refuse an integer input no value can satisfy; warn, once per source, when the graph gave no bound."""
    values = spec.values
    if values is None:
        return
    if values.kind == "impossible":
        raise ConfigError(f"input '{spec.name}' {values.why}, so no value is valid and random data cannot be "
                          "made for it; give real data (a folder of .npy/.npz files or a load_data() script)")
    if values.kind == "unknown":
        logger.warning("random data: input '%s' %s, which bounds none of its values; drawing integers in "
                       "[%d, %d); give real data if the model needs other values",
                       spec.name, values.why, values.low, values.high)


def _graph_integers(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...]) -> np.ndarray:
    """Integers as the graph allows them (``spec.values``): a mask is rows of 1s then 0s, each row (last
    axis) with at least one 1, as a padding mask looks (all-0 rows make softmax or a mean divide by 0)."""
    values = spec.values
    if values.kind == "mask":
        if not shape:
            return np.ones(shape, spec.dtype)
        valid = rng.integers(1, shape[-1] + 1, size=shape[:-1]) if shape[-1] else np.zeros(shape[:-1], int)
        return (np.arange(shape[-1]) < valid[..., None]).astype(spec.dtype)
    return rng.integers(values.low, values.high, size=shape, dtype=spec.dtype)


def _random_array(rng: np.random.Generator, spec: InputSpec, shape: tuple[int, ...],
                  low: float | None, high: float | None, distribution: str) -> np.ndarray:
    dtype = spec.dtype
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu" and low is None and high is None and spec.values is not None:
        return _graph_integers(rng, spec, shape)
    if dtype.kind in "iu":
        lo, hi = int(0 if low is None else low), int(100 if high is None else high)
        try:
            return rng.integers(lo, hi, size=shape, dtype=dtype)
        except ValueError as exc:
            raise ConfigError(f"random data range [{lo}, {hi}) for input '{spec.name}' does not fit "
                              f"{dtype}: {one_line(exc)}") from exc
    if dtype.kind == "f" or "float" in dtype.name:
        if distribution == "normal":
            values = rng.standard_normal(shape)
            if low is not None or high is not None:
                values = np.clip(values, low, high)
        else:
            values = rng.uniform(0.0 if low is None else low, 1.0 if high is None else high, size=shape)
        return values.astype(dtype)
    raise CalibrationDataError(f"input '{spec.name}' is {dtype}; random data supports bool, integer and "
                               "float inputs: give real data (.npz files or a load_data() script)")


# ----------------------------------------------------------------------------- Python code

def one_line(exc: BaseException) -> str:
    """First line of an exception's message, bounded, for one-line error reports."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _script_error(script: Path, during: str, exc: BaseException) -> CalibrationDataError:
    line = exc.lineno if isinstance(exc, SyntaxError) else None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == script.resolve():
            line = frame.lineno
    at = f" line {line}" if line else ""
    return CalibrationDataError(
        f"calibration script '{script.name}'{at} failed while {during}: {type(exc).__name__}: "
        f"{one_line(exc)}; fix the script (run it with python to see the full traceback)")


def _import_script(script: Path) -> Any:
    """Execute ``script`` as a module. Its folder is put first on sys.path and the module is registered
    in sys.modules only while it runs, so it can import its neighbours and define dataclasses."""
    name = f"onnxq_calibration_script_{abs(hash(str(script.resolve())))}"
    spec = importlib.util.spec_from_file_location(
        name, script, loader=importlib.machinery.SourceFileLoader(name, str(script)))
    module = importlib.util.module_from_spec(spec)
    folder = str(script.resolve().parent)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise _script_error(script, "loading", exc) from exc
    finally:
        sys.modules.pop(name, None)
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def from_script(path: PathArg) -> DataSource:
    """Feeds from ``load_data()`` in a Python file the user names (Polygraphy's convention).

    The file is executed once, here; ``load_data()`` is called again on every iteration, so it should
    return a fresh iterable of feed dicts each time (a generator function does). Errors in the user's
    code become a CalibrationDataError naming the file, the line and the message.
    """
    script = Path(path)
    if not script.is_file():
        raise CalibrationDataError(f"calibration script '{script}' does not exist; pass the path of a "
                                   "Python file that defines load_data()")
    load_data = getattr(_import_script(script), "load_data", None)
    if not callable(load_data):
        raise CalibrationDataError(
            f"calibration script '{script.name}' defines no load_data() function; add one that yields "
            "feed dicts, e.g. def load_data(): yield {'input': np.zeros((1, 3, 224, 224), np.float32)}")

    def opener() -> Iterator[Feed]:
        try:
            feeds = iter(load_data())
        except Exception as exc:
            raise _script_error(script, "calling load_data()", exc) from exc
        while True:
            try:
                feed = next(feeds)
            except StopIteration:
                return
            except Exception as exc:
                raise _script_error(script, "iterating load_data()", exc) from exc
            yield feed

    return DataSource(opener, f"load_data() from {script.name}", None)


class _Once:
    """Opener for a one-shot iterator: a second pass raises instead of silently yielding nothing."""

    def __init__(self, iterator: Iterator[Feed]) -> None:
        self._iterator, self._used = iterator, False

    def __call__(self) -> Iterator[Feed]:
        if self._used:
            raise CalibrationDataError(
                "this data source wraps an iterator, which can be read only once, and it was already "
                "read; pass a list, or a function that returns a new iterator, to from_iterable")
        self._used = True
        return self._iterator


def _not_a_feed_stream(obj: Any, where: str) -> CalibrationDataError:
    return CalibrationDataError(f"{where} got a {type(obj).__name__}, not an iterable of feed dicts; "
                                "pass e.g. [{'input': array}, ...] (wrap a single feed in a list)")


def from_iterable(obj: Iterable[Feed] | Callable[[], Iterable[Feed]],
                  description: str | None = None) -> DataSource:
    """Feeds from Python: a list (or any re-iterable collection) of feed dicts, a function returning a
    new iterable on each call, or an iterator/generator. An iterator can be consumed only once: a second
    pass raises CalibrationDataError; pass a list or a function when the data is needed twice."""
    if isinstance(obj, DataSource):
        return obj
    if isinstance(obj, (Mapping, np.ndarray, str, bytes)):
        raise _not_a_feed_stream(obj, "from_iterable")
    if isinstance(obj, Iterator):
        return DataSource(_Once(obj), description or "Python iterator (single pass)", None)
    if isinstance(obj, Iterable):
        count = len(obj) if isinstance(obj, Sized) else None
        if count == 0:
            raise CalibrationDataError("from_iterable got an empty collection; give at least one feed")
        what = f"{count} feeds" if count is not None else type(obj).__name__
        return DataSource(lambda: obj, description or f"Python {what}", count)
    if callable(obj):
        def opener() -> Iterable[Feed]:
            feeds = obj()
            if isinstance(feeds, (Mapping, np.ndarray, str, bytes)) or not isinstance(feeds, Iterable):
                raise _not_a_feed_stream(feeds, f"the function {getattr(obj, '__name__', obj)!r}")
            return feeds
        return DataSource(opener, description or f"Python function {getattr(obj, '__name__', '')}()", None)
    raise _not_a_feed_stream(obj, "from_iterable")


# ----------------------------------------------------------------------------- checks

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


def take(source: DataSource, limit: int) -> DataSource:
    """The first ``limit`` feeds of ``source`` (e.g. ``--calib-size``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"sample limit must be a positive integer, got {limit!r}")
    if source.count is not None and source.count <= limit:
        return source  # nothing to cut: no ", first N" in the description either
    return DataSource(lambda: itertools.islice(source, limit),
                      f"{source.description}, first {limit}", limit if source.count is not None else None)


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
