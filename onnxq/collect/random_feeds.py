"""Random feeds shaped and typed as the model declares: a smoke test of the pipeline, not a calibration.

Integer inputs get the values their graph allows (token ids below the embedding table's rows, 0/1 masks:
``InputSpec.values``), so a transformer runs on random data instead of failing in a Gather.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from onnxq.collect.feeds import DataSource, Feed, InputSpec, format_shape
from onnxq.errors import CalibrationDataError, ConfigError, one_line

logger = logging.getLogger(__name__)


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
