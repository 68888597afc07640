"""Which values an integer graph input may take, read from how the graph uses it.

Random data (``--random N``) must respect what the graph allows: token ids drawn from [0, 100) make
``Gather(token_type_embeddings[2, 384], ids)`` fail inside onnxruntime ("idx=87 must be within
[-2, 1]"), and a random 0/1 attention mask can hide every token of a row. So each integer input is
followed forward through ops that only move or re-type its values (Unsqueeze, Reshape, Cast to an
integer type, Gather of it as data...) to the ops that *use* its values:

* ``Gather`` indices into a table with a known number of rows along the gathered axis: the values must
  lie in [0, rows) (the smallest table wins when there are several);
* a mask: cast to bool, compared (Equal, Not, Greater...), or cast to float and then, after arithmetic
  with constants only, combined with a non-constant tensor (``scores + (1 - m) * -1e4``,
  ``hidden * m``): 0/1 values, at least one 1 per row;
* a number: cast to float and fed to a Conv/MatMul...: any value of an 8-bit type is valid;
* ``Shape`` / ``Size``: only the shape is read, the values are free.

Anything else (an op this module does not understand, a table whose size is unknown) gives no bound:
the caller uses a small range and warns, naming the input and the op. A table with no rows admits no
value at all (``impossible``). Subgraphs (If/Loop bodies) are not followed: an input read only there has
no bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

# Ops whose output holds (a subset or copy of) the values of input 0: a bound on the output's values
# is a bound on the input's. Concat moves the values of every input.
_MOVES_INPUT0 = frozenset({"Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Transpose", "Expand",
                           "Slice", "Tile", "Split", "Gather", "GatherElements", "GatherND", "Pad"})
_MOVES_ALL = frozenset({"Concat"})
_METADATA = frozenset({"Shape", "Size"})
_COMPARISONS = frozenset({"Equal", "Not", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or"})
# After a cast to float: ops that keep the value a function of the mask alone when their other operands
# are constant (1 - m, m * -1e4, sum of m, clip of the sum).
_MASK_ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Clip", "Max", "Min", "ReduceSum",
                              "ReduceMax", "ReduceMin", "ReduceMean", "Where"}) | _MOVES_INPUT0 | _MOVES_ALL
# Of those, the ones that combine it with another (data) tensor when that operand is not constant.
_COMBINING = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Where"})
_INTEGER = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
                      onnx.TensorProto.UINT16, onnx.TensorProto.INT32, onnx.TensorProto.UINT32,
                      onnx.TensorProto.INT64, onnx.TensorProto.UINT64})
_FLOAT = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                    onnx.TensorProto.BFLOAT16})


@dataclass(frozen=True)
class IntegerRange:
    """The values random data may give one integer input, and why.

    ``kind``: ``"index"`` (uniform in [low, high)), ``"mask"`` (0/1, at least one 1 per row along the last
    axis), ``"number"`` (uniform in [low, high): the full range of an 8-bit type), ``"free"`` (only the
    shape is read), ``"unknown"`` (no bound found: [low, high) is a small guess, ``why`` names the op to
    blame), ``"impossible"`` (no value is valid: ``why`` says which op).
    """

    kind: str
    low: int
    high: int
    why: str


@dataclass
class _Uses:
    index_rows: list[tuple[int, str]]
    mask: list[str]
    number: list[str]
    unknown: list[str]
    empty: list[str]


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Known shapes by tensor name, from initializers (dims only, nothing decoded), Constant nodes and
    value infos."""
    shapes: dict[str, list[int | None]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    shapes[node.output[0]] = list(a.t.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def _constants(model: onnx.ModelProto) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else node.op_type


def _follow(start: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]], shapes, constants,
            uses: _Uses) -> None:
    """Walk the integer values of ``start`` forward, recording every use in ``uses``."""
    seen, queue = {start}, deque([start])
    while queue:
        name = queue.popleft()
        for node, idx in consumers.get(name, []):
            op, nxt = node.op_type, []
            if op in _METADATA:
                continue
            if op == "Gather" and idx == 1:
                table = shapes.get(node.input[0])
                axis = _attr(node, "axis", 0)
                rows = table[axis] if table is not None and -len(table) <= axis < len(table) else None
                if rows is None:
                    uses.unknown.append(f"indexes {_label(node)}, a table of unknown size")
                elif rows == 0:
                    uses.empty.append(f"indexes {_label(node)}, a table with no rows")
                else:
                    uses.index_rows.append((int(rows), f"indexes {_label(node)} ({rows} rows)"))
            elif op == "Cast":
                to = _attr(node, "to", 0)
                if to in _INTEGER:
                    nxt = list(node.output[:1])
                elif to == onnx.TensorProto.BOOL:
                    uses.mask.append(f"is cast to bool by {_label(node)}")
                elif to in _FLOAT:
                    _float_use(node.output[0], consumers, constants, uses)
                else:
                    uses.unknown.append(f"is cast by {_label(node)}")
            elif op in _COMPARISONS:
                uses.mask.append(f"is compared by {_label(node)}")
            elif (op in _MOVES_INPUT0 and idx == 0) or op in _MOVES_ALL:
                nxt = list(node.output) if op == "Split" else list(node.output[:1])
            else:
                uses.unknown.append(f"is read by {_label(node)}")
            for out in nxt:
                if out and out not in seen:
                    seen.add(out)
                    queue.append(out)


def _float_use(start: str, consumers, constants: set[str], uses: _Uses) -> None:
    """The input cast to float: a mask when, after arithmetic with constants, it meets another tensor."""
    seen, queue = {start}, deque([start])
    while queue:
        name = queue.popleft()
        for node, idx in consumers.get(name, []):
            others = [t for i, t in enumerate(node.input) if i != idx and t and t not in constants]
            if node.op_type in _METADATA:
                continue
            if node.op_type in _COMBINING and others:
                uses.mask.append(f"is combined with another tensor by {_label(node)} (a mask)")
            elif node.op_type in _MASK_ARITHMETIC and (idx == 0 or node.op_type not in _MOVES_INPUT0):
                for out in node.output[:1]:
                    if out and out not in seen:
                        seen.add(out)
                        queue.append(out)
            else:
                uses.number.append(f"is read as a number by {_label(node)}")


def integer_input_ranges(model: onnx.ModelProto,
                         inputs: Iterable[str] | None = None) -> dict[str, IntegerRange]:
    """The :class:`IntegerRange` of each integer graph input (of ``inputs`` only, when given)."""
    graph = model.graph
    wanted = set(inputs) if inputs is not None else None
    targets = [vi for vi in graph.input if vi.type.HasField("tensor_type")
               and vi.type.tensor_type.elem_type in _INTEGER and (wanted is None or vi.name in wanted)]
    if not targets:
        return {}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, i))
    shapes, constants = _shapes(model), _constants(model)
    out = {}
    for vi in targets:
        uses = _Uses([], [], [], [], [])
        _follow(vi.name, consumers, shapes, constants, uses)
        out[vi.name] = _decide(uses, onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    return out


def _decide(uses: _Uses, dtype: np.dtype) -> IntegerRange:
    if uses.empty:
        return IntegerRange("impossible", 0, 0, uses.empty[0])
    if uses.index_rows:
        rows, why = min(uses.index_rows)
        return IntegerRange("index", 0, rows, why)
    if uses.mask:
        return IntegerRange("mask", 0, 2, uses.mask[0])
    if uses.number and not uses.unknown and np.dtype(dtype).itemsize == 1:
        info = np.iinfo(dtype)
        return IntegerRange("number", int(info.min), int(info.max) + 1, uses.number[0])
    blame = uses.unknown or uses.number
    if blame:
        return IntegerRange("unknown", 0, 2, blame[0])
    return IntegerRange("free", 0, 2, "only its shape is read")
