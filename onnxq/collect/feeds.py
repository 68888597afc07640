"""What a feed is and what it must match: ``Feed``, ``InputSpec`` (one model input), ``DataSource``.

A *feed* is one ``dict[str, np.ndarray]`` mapping each model input name to an array WITH the batch
dimension: exactly what ``onnxruntime.InferenceSession.run`` takes. A :class:`DataSource` is a
re-iterable, deterministic stream of feeds plus a ``count`` (for progress bars) and a one-line
``description`` (for the report). Every ``iter()`` starts over, so one source can drive calibration,
then comparison, then sensitivity analysis, and two runs see the samples in the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Union

import numpy as np
import onnx

from onnxq.errors import UnsupportedModelError
from onnxq.graph.int_inputs import IntegerRange, integer_input_ranges

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
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                          else _dim_name(d.dim_param) for d in tt.shape.dim)
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


def batch_size(feed: Feed) -> int:
    """Leading dimension of the first input of ``feed`` (1 for a scalar input)."""
    for value in feed.values():
        arr = np.asarray(value)
        return int(arr.shape[0]) if arr.ndim else 1
    return 1
