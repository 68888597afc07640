"""Quantization options as frozen records.

Strings from the CLI or a config file become enums in ``__post_init__``; a bad value raises
``ConfigError`` naming the valid choices, and unknown keys in a config file get a "did you mean".
One record per concern (activations, weights, placement) instead of a string-keyed option dict.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxq.errors import ConfigError

if TYPE_CHECKING:  # a type only: records.fallback imports this module
    from onnxq.records.sensitivity import Score


class Target(str, Enum):
    TENSORRT = "tensorrt"
    ORT_CPU = "ort-cpu"


class Mode(str, Enum):
    STATIC = "static"  # calibrated Q/DQ ranges for every quantized activation
    # no calibration data: onnxruntime kernels that quantize activations at run time (MatMul, Gemm, LSTM)
    DYNAMIC = "dynamic"


class Method(str, Enum):
    AUTO = "auto"  # every method below from one collection, kept by held-out score (onnxq.analysis.auto)
    MINMAX = "minmax"
    ENTROPY = "entropy"
    MSE = "mse"
    PERCENTILE = "percentile"


class WeightMethod(str, Enum):
    MAX = "max"
    MSE = "mse"
    PERCENTILE = "percentile"


class WeightFormat(str, Enum):
    QDQ = "qdq"  # float weight -> QuantizeLinear -> DequantizeLinear (TensorRT quantizes at build)
    DQ_ONLY = "dq-only"  # int8 initializer -> DequantizeLinear (smaller file)


class BatchStatistic(str, Enum):
    NONE = "none"  # one range over all samples (batch-invariant)
    MAX = "max"
    MEAN = "mean"
    MEDIAN = "median"
    MODAL = "modal"


def _expected(value: Any, hint: Any) -> str | None:
    """What ``hint`` expects, in a config file's terms, when ``value`` does not fit it (else None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        problem = _expected(value, inner[0]) if len(inner) == 1 else None
        return problem + " (or left out)" if problem else None
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, numbers.Real) and not isinstance(value, bool) else "a number"
    if isinstance(hint, type) and issubclass(hint, Enum):
        ok = isinstance(value, (str, hint))
        return None if ok else "one of " + ", ".join(repr(e.value) for e in hint)
    if typing.get_origin(hint) is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of strings"
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, (dict, hint)) else "a table of keys"
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_types(record: Any, prefix: str) -> None:
    """ConfigError naming the key and the expected type for a field whose value has the wrong type
    (checked before any comparison, which would fail with a Python-internal message)."""
    hints = _hints(type(record))
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        expected = _expected(value, hints[f.name])
        if expected:
            raise ConfigError(f"config key '{prefix}{f.name}' must be {expected}, got {value!r} "
                              f"({type(value).__name__})")


def _enum(enum_type: type[Enum], value: Any, what: str) -> Enum:
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(str(value).lower())
    except ValueError:
        choices = ", ".join(e.value for e in enum_type)
        raise ConfigError(f"invalid {what} {value!r}: choose one of {choices}") from None


@dataclass(frozen=True)
class ActivationSpec:
    """How activation ranges are calibrated."""

    method: Method = Method.AUTO
    num_bins: int = 2048
    percentile: float = 99.99
    batch_statistic: BatchStatistic = BatchStatistic.NONE
    # Histogram methods: replace a threshold whose expected squared quantization error is more than this
    # times the MSE-optimal one by the latter (None: off). minmax is never changed (it promises no clipping).
    guard_ratio: float | None = 2.0

    def __post_init__(self) -> None:
        _check_types(self, "activations.")
        object.__setattr__(self, "method", _enum(Method, self.method, "activation method"))
        object.__setattr__(
            self, "batch_statistic", _enum(BatchStatistic, self.batch_statistic, "batch statistic")
        )
        if self.num_bins < 256 or self.num_bins % 128:
            raise ConfigError(f"num_bins must be a multiple of 128 and at least 256, got {self.num_bins}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")

    @property
    def needs_histogram(self) -> bool:
        return self.method is not Method.MINMAX  # auto solves every method from the same statistics


@dataclass(frozen=True)
class WeightSpec:
    """How weights are quantized (always int8 symmetric, zero-point 0)."""

    method: WeightMethod = WeightMethod.MAX
    per_channel: bool = True
    # TensorRT has been reported not to support per-output-channel ConvTranspose (TensorRT#2380).
    convtranspose_per_channel: bool = True
    # None = the target's: qdq for tensorrt, dq-only for ort-cpu (its only form: onnxruntime's integer CPU
    # kernels take int8 weight initializers). QuantConfig resolves it, so the recorded config says what was written.
    format: WeightFormat | None = None
    # method "percentile": this percentile of |w| per channel, linearly interpolated (calibrate/weights.py)
    percentile: float = 99.99
    # 7-bit weights ([-63, 63]). onnxruntime's x86 int8 kernels without VNNI add pairs of uint8 x int8
    # products in int16 and saturate with full-range weights; 7 bits cannot saturate. None = the target's
    # default: on for ort-cpu, off for tensorrt (TensorRT has no such limit).
    reduce_range: bool | None = None
    # Fold the mean output error of weight quantization into the float biases (Nagel et al. 2019, DFQ
    # section 4.2): one extra float pass over the calibration data. EfficientNet-Lite0 TensorRT: top-1
    # agreement 97.25-97.5 -> 98.25-98.5 %, logit MSE halved (benchmarks/accuracy_experiments.py).
    bias_correction: bool = True

    def __post_init__(self) -> None:
        _check_types(self, "weights.")
        object.__setattr__(self, "method", _enum(WeightMethod, self.method, "weight method"))
        if self.format is not None:
            object.__setattr__(self, "format", _enum(WeightFormat, self.format, "weight format"))
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"weights percentile must be in (50, 100], got {self.percentile}")


@dataclass(frozen=True)
class QuantConfig:
    """Everything that decides the output model. Recorded in the written model's metadata."""

    target: Target = Target.TENSORRT
    activations: ActivationSpec = field(default_factory=ActivationSpec)
    weights: WeightSpec = field(default_factory=WeightSpec)
    exclude_nodes: tuple[str, ...] = ()  # regular expressions searched in node names
    exclude_ops: tuple[str, ...] = ()  # op types left in float
    # Samples per onnxruntime run while calibrating. None: automatic, up to 4 feeds per run when the model
    # has a dynamic batch dim and batching is checked to change no collected value (onnxq.collect.coalesce).
    batch_size: int | None = None
    seed: int = 0
    collect_memory_mb: float = 1024.0  # activations held at once while collecting (more: several passes)
    # Even out the per-channel ranges of depthwise-conv inputs before their per-tensor scale (a Mul, folded
    # back into the depthwise weights; onnxq.rewrite.equalize). TensorRT target only. None: method auto
    # quantizes the model both ways and keeps the better on held-out samples (an explicit method: off).
    # It helps where channels differ widely (YOLOX-Nano mse 5.4 -> 32.4 mAP, PP-OCR cls, PP-OCRv4 det) and
    # costs a point of agreement where they do not (EfficientNet-Lite0). One more pass over the data.
    equalize: bool | None = None
    # dynamic: onnxruntime's DynamicQuantizeMatMul / DynamicQuantizeLSTM, which quantize their inputs at
    # run time; needs no calibration data and targets ort-cpu only (TensorRT's parser has no such ops)
    mode: Mode = Mode.STATIC

    def __post_init__(self) -> None:
        _check_types(self, "")
        object.__setattr__(self, "target", _enum(Target, self.target, "target"))
        object.__setattr__(self, "mode", _enum(Mode, self.mode, "mode"))
        if self.mode is Mode.DYNAMIC and self.target is not Target.ORT_CPU:
            raise ConfigError("mode 'dynamic' writes onnxruntime's integer kernels (com.microsoft "
                              "DynamicQuantizeMatMul, DynamicQuantizeLSTM), which TensorRT's ONNX parser does not "
                              "accept: use target 'ort-cpu', or mode 'static' for TensorRT")
        if isinstance(self.activations, dict):
            object.__setattr__(self, "activations", _from_dict(ActivationSpec, self.activations, "activations"))
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", _from_dict(WeightSpec, self.weights, "weights"))
        self._resolve_weight_format()
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        object.__setattr__(self, "exclude_ops", tuple(self.exclude_ops))
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if isinstance(self.collect_memory_mb, bool) or not isinstance(self.collect_memory_mb, (int, float)) \
                or not self.collect_memory_mb > 0:
            raise ConfigError(f"collect_memory_mb must be a positive number, got {self.collect_memory_mb!r}")

    def _resolve_weight_format(self) -> None:
        fmt = self.weights.format
        if fmt is None:
            fmt = WeightFormat.DQ_ONLY if self.target is Target.ORT_CPU else WeightFormat.QDQ
            object.__setattr__(self, "weights", dataclasses.replace(self.weights, format=fmt))
        elif fmt is WeightFormat.QDQ and self.target is Target.ORT_CPU:
            raise ConfigError("weights format 'qdq' is not available for target 'ort-cpu': onnxruntime's integer "
                              "CPU kernels take int8 weight initializers ('dq-only'); leave the format unset")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @staticmethod
    def from_dict(data: dict[str, Any]) -> QuantConfig:
        return _from_dict(QuantConfig, data, "config")


def exclusion_problems(
    config: QuantConfig, node_names: list[str], op_types: set[str], known_op_types: set[str]
) -> tuple[list[str], list[str]]:
    """(errors, warnings) about exclusions that cannot act on a model with these node names and op types.

    Error: an excluded op type that is no op type (``known_op_types``: the model's and ONNX's) but equals
    one up to case, e.g. ``conv`` for ``Conv``: surely a typo, and op types are case-sensitive.
    Warnings: an op type no node has, a node pattern that matches no node name (a config shared across
    models may name what one model lacks, hence not an error). Invalid patterns are left to placement.
    """
    errors, warnings = [], []
    by_lower = {op.lower(): op for op in sorted(known_op_types)}
    for op in dict.fromkeys(config.exclude_ops):
        if op in op_types:
            continue
        if op not in known_op_types and op.lower() in by_lower:
            errors.append(f"--exclude-op {op}: no such op type (op types are case-sensitive); "
                          f"did you mean --exclude-op {by_lower[op.lower()]}?")
        else:
            warnings.append(f"--exclude-op {op} excludes nothing: no node of this model (after preprocessing) "
                            "is of that op type")
    for pattern in dict.fromkeys(config.exclude_nodes):
        try:
            compiled = re.compile(pattern)
        except re.error:
            continue
        if not any(compiled.search(name) for name in node_names):
            warnings.append(f"--exclude-node {pattern!r} excludes nothing: it matches no node name of this "
                            "model (after preprocessing, which names unnamed nodes <Op>_<k>)")
    return errors, warnings


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of keys, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(names)})"
            raise ConfigError(f"unknown key {key!r} in {where}{hint}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"bad value in {where}: {exc}") from None


def load_config(path: str | Path) -> QuantConfig:
    """Read a QuantConfig from a .toml or .json file (parsed as data: no code runs)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text.decode("utf-8"))
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from None
    return QuantConfig.from_dict(data)


# ------------------------------------------------------------------------------------ automatic fallback

DEFAULT_FLOAT_FRACTION = 0.10
SELECT = ("rule", "sqnr")


@dataclass(frozen=True)
class FallbackRule:
    """When :func:`onnxq.api.quantize_with_fallback` stops moving layers to float; None disables a
    condition (the search itself: :mod:`onnxq.analysis.fallback`)."""

    max_float_layers: int | None = None
    min_sqnr_db: float | None = None
    max_metric_drop: float | None = None
    select: str = "rule"  # choose each step by the rule's measure ("rule") or by output SQNR ("sqnr")
    # stop when the best next layer buys less than this on the deciding measure (None: go on to the cap)
    min_step_gain: float | None = None

    def __post_init__(self) -> None:
        if self.select not in SELECT:
            raise ConfigError(f"invalid fallback selection {self.select!r}: choose one of {', '.join(SELECT)}")
        if self.max_float_layers is None and self.min_sqnr_db is None and self.max_metric_drop is None:
            raise ConfigError("automatic fallback needs a stopping rule: give --max-float-layers N, "
                              "--min-sqnr DB or --max-metric-drop X (with --metric-script)")
        if self.max_float_layers is not None and self.max_float_layers < 0:
            raise ConfigError(f"--max-float-layers must be >= 0, got {self.max_float_layers}")
        if self.max_metric_drop is not None and self.max_metric_drop < 0:
            raise ConfigError(f"--max-metric-drop must be >= 0, got {self.max_metric_drop}")

    @property
    def has_target(self) -> bool:
        return self.min_sqnr_db is not None or self.max_metric_drop is not None

    def holds(self, score: Score, float_metric: float | None) -> bool:
        """True when every target holds for ``score`` (a rule with no target never holds: fill the cap)."""
        if not self.has_target:
            return False
        if self.min_sqnr_db is not None and not score.sqnr_db >= self.min_sqnr_db:
            return False
        if self.max_metric_drop is not None:
            if score.metric is None or float_metric is None:
                return False
            slack = 1e-9 * max(1.0, abs(float_metric))  # 93.4 - 93.2 is 0.2000000000000028 in binary
            if not float_metric - score.metric <= self.max_metric_drop + slack:
                return False
        return True

    def cap(self, units: int, heavy: int | None = None) -> int:
        """Most layers moved to float: ``max_float_layers``, else 10 % of the ``heavy`` units (Conv, Gemm,
        MatMul: where the int8 speed is) when there are any, else of all ``units``; at least one. Counting
        heavy units keeps >= 90 % of them quantized even when cheap units (a residual Add) are candidates."""
        if self.max_float_layers is not None:
            return min(self.max_float_layers, units)
        base = heavy if heavy else units
        return min(units, max(1, math.floor(DEFAULT_FLOAT_FRACTION * base)))
